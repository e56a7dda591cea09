"""Quantization ladders: one model's files at several quantization levels.

The ladder starts from the model's highest-precision file present. Levels the catalog has a
file for are taken as they are; the others are made from the source with llama.cpp's
quantizer and cached in the models folder, with their sha256 and their source's in a
manifest (``quant-ladder.json``) so a changed source rebuilds them. A level above the
source's precision is skipped: an upward step from a quantized file holds no more
information than the file itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError, quoted
from ..llm.catalog import Catalog, GGUFInfo, ModelFile, chat_format_for, file_sha256, inspect_gguf
from ..store import Store

MANIFEST = "quant-ladder.json"

NOMINAL_BITS: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_1": 6.0,
    "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5, "Q4_1": 5.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58,
    "Q4_0": 4.5, "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 2.96,
}
"""Bits per weight of each file type for a 7B llama model (llama.cpp's quantize table): the
order of precision. Small models' mixes differ (K-quants fall back for rows not a multiple
of 256 wide), which is why every file's actual tensor types are reported."""


def level_name(quant: str) -> str:
    """The canonical spelling of a quantization level; a :class:`ConfigError` for unknown ones."""
    name = quant.strip().upper()
    if name not in NOMINAL_BITS:
        raise ConfigError(f"unknown quantization level {quoted(quant)}; use some of {', '.join(NOMINAL_BITS)}")
    return name


@dataclass(frozen=True)
class LadderSource:
    """The highest-precision file of one model, and the catalog's other files present for it."""

    name: str
    path: Path
    quant: str
    chat_format: str
    present: dict[str, Path]
    """Files present per level (the source's own level included)."""

    @property
    def is_quantized(self) -> bool:
        return NOMINAL_BITS.get(self.quant, 0.0) < NOMINAL_BITS["F16"]

    @property
    def note(self) -> str:
        """One line on what the ladder from this source measures."""
        if not self.is_quantized:
            return f"source {self.path.name} is {self.quant}: every level is a real quantization"
        return (
            f"source {self.path.name} is already {self.quant}: levels above it are skipped (an upward "
            "step holds only the source's information), levels below it are real"
        )


def _declared_quant(info: GGUFInfo) -> str:
    if info.file_type in NOMINAL_BITS:
        return info.file_type
    raise ModelError(
        f"{info.path} declares file type {info.file_type or 'none'}, which has no place on the "
        f"ladder ({', '.join(NOMINAL_BITS)}); start from another file"
    )


def find_source(catalog: Catalog, name_or_path: str, chat_format: str | None = None) -> LadderSource:
    """The ladder source for a catalog name (its most precise file present) or a .gguf path."""
    if name_or_path in catalog.models:
        spec = catalog.models[name_or_path]
        present = {}
        for entry in spec.files:
            path = catalog.find(spec, entry)
            if path is not None:
                present[_declared_quant(inspect_gguf(path))] = path
        if not present:
            catalog.resolve(name_or_path)  # raises the catalog's "not found, get it from ..." error
        quant = max(present, key=NOMINAL_BITS.__getitem__)
        chat = chat_format_for(ModelFile(present[quant], present[quant].stat().st_size, quant, spec))
        return LadderSource(spec.name, present[quant], quant, chat, present)
    model_file = catalog.resolve(name_or_path)
    quant = _declared_quant(inspect_gguf(model_file.path))
    name = model_file.spec.name if model_file.spec else model_file.path.stem
    return LadderSource(name, model_file.path, quant, chat_format_for(model_file, chat_format), {quant: model_file.path})


@dataclass(frozen=True)
class LadderStep:
    """One level of a ladder: an existing file, a file to build, or a skipped level."""

    quant: str
    path: Path | None
    origin: str
    """``source``, ``catalog`` (a file already present), ``build`` or ``skipped``."""
    reason: str | None = None


def plan_ladder(source: LadderSource, quants: Sequence[str], directory: Path) -> list[LadderStep]:
    """The source's own level first, then each requested level (canonical names) in order."""
    steps = [LadderStep(source.quant, source.path, "source")]
    top = NOMINAL_BITS[source.quant]
    for quant in dict.fromkeys(quants):
        if quant == source.quant:
            continue
        if quant in source.present:
            steps.append(LadderStep(quant, source.present[quant], "catalog"))
        elif NOMINAL_BITS[quant] > top:
            reason = f"above the source's precision ({source.quant}): an upward step is pointless"
            steps.append(LadderStep(quant, None, "skipped", reason))
        else:
            steps.append(LadderStep(quant, directory / f"{source.path.stem}.ladder-{quant}.gguf", "build"))
    return steps


def _read_manifest(directory: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # unreadable or damaged: every ladder file is rebuilt
        return {}


def _write_manifest(directory: Path, manifest: dict[str, dict[str, str]]) -> None:
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


def quantize_file(source: Path, target: Path, quant: str, threads: int) -> None:
    """Write ``source`` quantized to ``quant`` at ``target`` (atomically) with llama.cpp."""
    import llama_cpp

    from ..llm import engine  # noqa: F401  (installs the quiet llama.cpp log callback)

    params = llama_cpp.llama_model_quantize_default_params()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32 if ftype is None else ftype
    params.nthread = threads
    params.allow_requantize = True
    partial = target.with_name(f".{target.name}.partial")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        partial.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not quantize {source} to {quant}")
    os.replace(partial, target)


def build_ladder(
    source: LadderSource,
    steps: Sequence[LadderStep],
    store: Store | None,
    threads: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Build the steps' missing or stale files; returns each present file's sha256 by level.

    A ladder file is reused when the manifest records it as made from a source with the same
    sha256 and the file still has the sha256 recorded then.
    """
    source_sha = file_sha256(source.path, store)
    hashes: dict[str, str] = {}
    to_build = [s for s in steps if s.origin == "build"]
    directory = to_build[0].path.parent if to_build else source.path.parent
    manifest = _read_manifest(directory) if to_build else {}
    for done, step in enumerate(steps):
        if progress:
            progress(done, len(steps))
        if step.path is None:
            continue
        if step.origin == "build":
            record = manifest.get(step.path.name, {})
            fresh = (
                step.path.is_file()
                and record.get("source_sha256") == source_sha
                and record.get("sha256") == file_sha256(step.path, store)
            )
            if not fresh:
                directory.mkdir(parents=True, exist_ok=True)
                quantize_file(source.path, step.path, step.quant, threads)
                manifest[step.path.name] = {
                    "source": source.path.name, "source_sha256": source_sha, "quant": step.quant,
                    "sha256": file_sha256(step.path, store),
                }
                _write_manifest(directory, manifest)
        hashes[step.quant] = file_sha256(step.path, store)
    if progress:
        progress(len(steps), len(steps))
    return hashes
