"""The model catalog: which GGUF files mollia-edge knows, where they are, and whether they are intact.

The catalog (``mollia_edge/llm/catalog.toml``, shipped with the package; a ``catalog.toml`` in the
models folder replaces it) names the paper's five LLMs and the two starter models.
:meth:`Catalog.resolve` turns a catalog name or a path into a located :class:`ModelFile`;
:func:`inspect_gguf` reads a file's header; :func:`verify` checks its sha256 against the
catalog. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import mmap
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    LlamaFileType,
)

from ..config import MODEL_SETTINGS, LLMConfig, model_llm, read_toml
from ..errors import ConfigError, ModelError, quoted
from ..files import regular_file_problem

if TYPE_CHECKING:
    from ..store import Store

ChatFormat = Literal["chatml", "gemma", "llama3", "mistral", "none"]
Origin = Literal["download", "package-file", "package-assemble"]
"""``download``: the user copies the file in; ``package-file``: the file may sit inside an
installed package's folder; ``package-assemble``: an installed package assembles it on first use."""

CHAT_FORMATS: tuple[str, ...] = get_args(ChatFormat)
ORIGINS: tuple[str, ...] = get_args(Origin)
MODELS_DIR_ENV = "MOLLIA_EDGE_MODELS_DIR"
SETUP_COMMAND = "mollia-edge setup"

_CHECKOUT = Path(__file__).resolve().parents[2]
_REPO_MODELS_DIR = _CHECKOUT / "models"
_PACKAGE_CATALOG = Path(__file__).resolve().parent / "catalog.toml"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def models_dir() -> Path:
    """Where model and encoder files live: ``$MOLLIA_EDGE_MODELS_DIR`` (``--models-dir`` sets
    it), else the checkout's ``models/`` when mollia-edge runs from a source checkout, else the
    user's data folder (platformdirs: ``~/.local/share/mollia-edge/models`` on Linux)."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "mollia_edge").is_dir():
        return _REPO_MODELS_DIR
    import platformdirs

    return platformdirs.user_data_path("mollia-edge", appauthor=False) / "models"


@dataclass(frozen=True)
class QuantFile:
    """One quantization of a catalog model: its public file name and, if known, its sha256."""

    quant: str
    file: str
    sha256: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry."""

    name: str
    display_name: str
    chat_format: ChatFormat
    source: str
    """Where to get the file (plain text for the user; never fetched)."""
    files: tuple[QuantFile, ...]
    """In order of preference; the first present one is the default quantization."""
    origin: Origin = "download"
    package: str | None = None
    """The Python package (import name) behind a ``package-*`` origin."""
    settings: Mapping[str, int] = field(default_factory=dict)
    """llama.cpp settings of this model's own (n_ctx, n_batch, n_threads, n_gpu_layers), above
    ``[llm]``; a configuration file's ``[models."NAME"]`` is above these."""

    @property
    def quants(self) -> tuple[str, ...]:
        return tuple(f.quant for f in self.files)

    def quant_file(self, quant: str) -> QuantFile:
        """The catalog file for ``quant`` (case-insensitive)."""
        for entry in self.files:
            if entry.quant.upper() == quant.upper():
                return entry
        raise ModelError(
            f"model {self.name} has no {quant} file in the catalog; choose one of {', '.join(self.quants)}"
        )

    def missing_message(self, entry: QuantFile, directory: Path) -> str:
        """One line saying which file is expected where and how to get it."""
        expected = directory / entry.file
        if self.origin == "download":
            return (
                f"model {self.name} ({entry.quant}) not found: expected {expected}; download "
                f"{entry.file} from {self.source} on a connected machine and copy it into {directory}"
            )
        return (
            f"starter model {self.name} not found: expected {expected}; "
            f"run `{SETUP_COMMAND}` to install the starter models"
        )


@dataclass(frozen=True)
class ModelFile:
    """A model file located on disk; ``spec``/``quant`` are None for a file the catalog does not list."""

    path: Path
    size: int
    quant: str | None
    spec: ModelSpec | None

    @property
    def expected_sha256(self) -> str | None:
        """The catalog's sha256 for this file, if it records one."""
        if self.spec is None or self.quant is None:
            return None
        return self.spec.quant_file(self.quant).sha256


def check_model_path(path: Path) -> None:
    """A :class:`ModelError` unless ``path`` is a regular file (never opens it: a pipe would block)."""
    problem = regular_file_problem(path)
    if problem == "not found":
        raise ModelError(f"model file not found: {path}")
    if problem is not None:
        raise ModelError(f"model file {path} {problem}; give a .gguf file")


def _model_file(path: Path, quant: str | None, spec: ModelSpec | None) -> ModelFile:
    return ModelFile(path=path, size=path.stat().st_size, quant=quant, spec=spec)


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


@dataclass(frozen=True)
class Catalog:
    """The known models and the folder their files are looked for in."""

    models: Mapping[str, ModelSpec]
    starter: tuple[str, ...]
    directory: Path

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ModelError(
                f"unknown model {quoted(name)}: use a catalog name ({', '.join(self.models)}) or a path to a .gguf file"
            ) from None

    def find(self, spec: ModelSpec, entry: QuantFile) -> Path | None:
        """Where ``entry`` is present now (models folder, then the package folder), else None."""
        exact = self.directory / entry.file
        if exact.is_file():
            return exact
        if self.directory.is_dir():
            wanted = entry.file.lower()
            for candidate in self.directory.iterdir():
                if candidate.name.lower() == wanted and candidate.is_file():
                    return candidate
        if spec.origin == "package-file" and spec.package:
            package_dir = _package_dir(spec.package)
            if package_dir is not None and (package_dir / entry.file).is_file():
                return package_dir / entry.file
        return None

    def resolve(self, name_or_path: str | os.PathLike[str], quant: str | None = None) -> ModelFile:
        """Locate a model by catalog name (``quant``: default the first present) or by .gguf path."""
        text = os.fspath(name_or_path)
        if text in self.models:
            return self._resolve_name(self.models[text], quant)
        path = Path(text).expanduser()
        if path.suffix.lower() == ".gguf" or len(path.parts) > 1:
            return self._resolve_path(path)
        return self._resolve_name(self.spec(text), quant)

    def _resolve_path(self, path: Path) -> ModelFile:
        check_model_path(path)
        name = path.name.lower()
        for spec in self.models.values():
            for entry in spec.files:
                if entry.file.lower() == name:
                    return _model_file(path, entry.quant, spec)
        return _model_file(path, None, None)

    def _resolve_name(self, spec: ModelSpec, quant: str | None) -> ModelFile:
        if quant is not None:
            entry = spec.quant_file(quant)
        else:
            for candidate in spec.files:
                found = self.find(spec, candidate)
                if found is not None:
                    return _model_file(found, candidate.quant, spec)
            entry = spec.files[0]
        found = self.find(spec, entry)
        if found is None and spec.origin == "package-assemble":
            found = self._assemble(spec, entry)
        if found is None:
            raise ModelError(spec.missing_message(entry, self.directory))
        return _model_file(found, entry.quant, spec)

    def _assemble(self, spec: ModelSpec, entry: QuantFile) -> Path | None:
        """Have the installed package write ``entry`` into the models folder (atomically)."""
        if not spec.package or _package_dir(spec.package) is None:
            return None
        target = self.directory / entry.file
        partial = self.directory / f".{entry.file}.{os.getpid()}.partial"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            importlib.import_module(spec.package).assemble(partial, overwrite=True)
            os.replace(partial, target)
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"cannot assemble {entry.file} from the {spec.package} package ({exc}); "
                f"reinstall the starter models with `{SETUP_COMMAND}`"
            ) from None
        return target


def default_catalog_path() -> Path:
    """``catalog.toml`` in the models folder if the user put one there, else the one shipped
    with the package."""
    local = models_dir() / "catalog.toml"
    return local if local.is_file() else _PACKAGE_CATALOG


def _parse_spec(name: str, raw: Any, where: Path) -> ModelSpec:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"{where}: model {name!r}: {message}")

    if not isinstance(raw, dict):
        raise bad("must be a table")
    known = {"display_name", "chat_format", "source", "origin", "package", "files", *MODEL_SETTINGS}
    if unknown := set(raw) - known:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("display_name", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise bad(f"{key} must be a non-empty string")
    if raw.get("chat_format") not in CHAT_FORMATS:
        raise bad(f"chat_format must be one of {', '.join(CHAT_FORMATS)}, got {raw.get('chat_format')!r}")
    origin = raw.get("origin", "download")
    if origin not in ORIGINS:
        raise bad(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
    package = raw.get("package")
    if origin != "download" and not isinstance(package, str):
        raise bad(f"origin {origin!r} needs a package name")
    files_raw = raw.get("files")
    if not isinstance(files_raw, dict) or not files_raw:
        raise bad("files must list at least one quantization")
    files = []
    for quant, item in files_raw.items():
        if not isinstance(item, dict) or set(item) - {"file", "sha256"}:
            raise bad(f"files.{quant} must be {{ file = ..., sha256 = ... }}")
        file = item.get("file")
        if not isinstance(file, str) or not file.lower().endswith(".gguf") or Path(file).name != file:
            raise bad(f"files.{quant}.file must be a bare .gguf file name, got {file!r}")
        sha = item.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise bad(f"files.{quant}.sha256 must be 64 lowercase hex digits")
        files.append(QuantFile(quant=quant, file=file, sha256=sha))
    settings = {key: raw[key] for key in MODEL_SETTINGS if key in raw}
    try:
        model_llm(LLMConfig(), settings, "its settings")
    except ConfigError as exc:
        raise bad(str(exc)) from None
    return ModelSpec(
        name=name,
        settings=settings,
        display_name=raw["display_name"],
        chat_format=raw["chat_format"],
        source=raw["source"],
        files=tuple(files),
        origin=origin,
        package=package,
    )


def load_catalog(path: str | os.PathLike[str] | None = None, *, directory: Path | None = None) -> Catalog:
    """Read the catalog (default :func:`default_catalog_path`); files are looked for in ``directory``
    (default :func:`models_dir`)."""
    where = Path(path) if path is not None else default_catalog_path()
    data = read_toml(where, "model catalog")
    if unknown := set(data) - {"defaults", "models"}:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    models_raw = data.get("models", {})
    if not isinstance(models_raw, dict):
        raise ConfigError(f"{where}: [models] must be a table")
    models = {name: _parse_spec(name, raw, where) for name, raw in models_raw.items()}
    starter = data.get("defaults", {}).get("starter", [])
    if not isinstance(starter, list) or any(name not in models for name in starter):
        raise ConfigError(f"{where}: defaults.starter must list catalog model names")
    return Catalog(models=models, starter=tuple(starter), directory=directory or models_dir())


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file's header says about the model in it."""

    path: Path
    architecture: str
    file_type: str | None
    """The quantization the file declares, e.g. ``Q4_K_M``; individual tensors may differ."""
    parameters: int
    context_length: int | None
    chat_template: str | None
    """The file's chat template (``tokenizer.chat_template``), None when it has none."""
    tensor_types: Mapping[str, int]
    """How many tensors use each ggml type (the real quantization mix)."""
    data_end: int
    """Byte offset where the last tensor's data ends; at most ``file_size`` in an intact file."""
    file_size: int


def _file_type_name(value: int) -> str:
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type {value}"


_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class _HeaderCursor:
    """Walks a little-endian GGUF v2/v3 header, skipping arrays (vocabularies) without decoding them.

    The gguf package's GGUFReader builds a numpy view per vocabulary string: seconds for
    SmolLM2's 49k tokens, tens of seconds for Gemma's 262k. This reads only what is shown.
    Reading past the end of the file raises ``struct.error``.
    """

    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer = buffer
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> str:
        (length,) = self.unpack("<Q")
        self._advance(length)
        return self.buffer[self.pos - length : self.pos].decode("utf-8", errors="replace")

    def _advance(self, length: int) -> None:
        if length > len(self.buffer) - self.pos:
            raise struct.error("past the end of the file")
        self.pos += length

    def value(self, value_type: int) -> Any:
        """A scalar or string value; arrays are skipped and give None."""
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            item_type, count = self.unpack("<IQ")
            if item_type in _SCALAR_FORMATS:
                self._advance(count * struct.calcsize(_SCALAR_FORMATS[GGUFValueType(item_type)]))
            else:
                if count * 8 > len(self.buffer) - self.pos:  # every item takes at least 8 bytes
                    raise struct.error("array past the end of the file")
                for _ in range(count):
                    self.value(item_type)
            return None
        return self.unpack(_SCALAR_FORMATS[GGUFValueType(value_type)])[0]


def _metadata_int(metadata: Mapping[str, Any], key: str) -> int | None:
    """An integer metadata value (None if absent); ``ValueError`` if the file holds another type."""
    value = metadata.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"metadata {key} is a {type(value).__name__}, not an integer")
    return value


def _read_header(buffer: mmap.mmap) -> tuple[dict[str, Any], list[tuple[str, int, int, int]], int]:
    """Metadata (arrays as None), tensors as (name, ggml type, elements, offset), data start."""
    cursor = _HeaderCursor(buffer)
    _magic, version = cursor.unpack("<II")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    tensor_count, kv_count = cursor.unpack("<QQ")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        (value_type,) = cursor.unpack("<I")
        metadata[key] = cursor.value(value_type)
    tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        (n_dims,) = cursor.unpack("<I")
        dims = cursor.unpack(f"<{n_dims}Q")
        ggml_type, offset = cursor.unpack("<IQ")
        tensors.append((name, ggml_type, math.prod(dims), offset))
    alignment = _metadata_int(metadata, "general.alignment")
    if alignment is not None and not 0 < alignment <= 1 << 30:
        raise ValueError(f"general.alignment is {alignment}, not a positive size")
    alignment = alignment or GGUF_DEFAULT_ALIGNMENT
    return metadata, tensors, cursor.pos + (-cursor.pos % alignment)


def inspect_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF header; a non-GGUF, truncated or unreadable file raises :class:`ModelError`."""
    path = Path(path)
    if path.exists():  # a missing file: the open below says so
        check_model_path(path)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF model file (no GGUF magic bytes); use a .gguf file")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                metadata, tensors, data_start = _read_header(buffer)
                file_type = _metadata_int(metadata, "general.file_type")
                architecture = metadata.get("general.architecture")
                context_length = _metadata_int(metadata, f"{architecture}.context_length")
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except struct.error:
        raise ModelError(f"{path} is truncated: its GGUF header runs past the end of the file; re-copy it") from None
    except ValueError as exc:
        raise ModelError(f"{path} is corrupt ({exc}); copy it again") from None
    if not isinstance(architecture, str):
        raise ModelError(f"{path} is corrupt: it names no model architecture; re-copy it")
    tensor_types: dict[str, int] = {}
    data_end = data_start
    parameters = 0
    for name, raw_type, elements, offset in tensors:
        try:
            ggml_type = GGMLQuantizationType(raw_type)
        except ValueError:
            raise ModelError(f"{path} is corrupt: tensor {quoted(name)} has unknown type {raw_type}; re-copy it") from None
        if ggml_type not in GGML_QUANT_SIZES:
            raise ModelError(
                f"{path} is corrupt: tensor {quoted(name)} has unsupported type {ggml_type.name}; re-copy it"
            )
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        data_end = max(data_end, data_start + offset + elements * type_size // block_size)
        tensor_types[ggml_type.name] = tensor_types.get(ggml_type.name, 0) + 1
        parameters += elements
    if data_end > size:
        raise ModelError(
            f"{path} is truncated: its tensor data ends at byte {data_end:,} but the file has "
            f"{size:,} bytes; re-copy it"
        )
    return GGUFInfo(
        path=path,
        architecture=architecture,
        file_type=_file_type_name(file_type) if file_type is not None else None,
        parameters=parameters,
        context_length=context_length,
        chat_template=template if isinstance(template := metadata.get("tokenizer.chat_template"), str) else None,
        tensor_types=tensor_types,
        data_end=data_end,
        file_size=size,
    )


def chat_format_for(model_file: ModelFile, given: str | None = None) -> str:
    """The chat format a model's prompts are written in: for a file outside the catalog
    ``given`` (``--chat-format``) when there is one; else the file's own chat template as
    llama.cpp applies it (the name of one of :data:`CHAT_FORMATS` when it writes the same text,
    so stored outputs keep their keys); else the catalog's format; else ``none``."""
    if model_file.spec is None and given:
        return given
    from .engine import apply_chat_template
    from .prompts import chat_format_of

    template = inspect_gguf(model_file.path).chat_template
    wrapper = apply_chat_template(template) if template else None
    if wrapper is not None:
        return chat_format_of(wrapper)
    return model_file.spec.chat_format if model_file.spec else "none"


def file_sha256(path: str | os.PathLike[str], store: Store | None = None) -> str:
    """The file's sha256, read once per (path, size, mtime) when a store caches it."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
        if store is not None:
            cached = store.file_hash(path, stat.st_size, stat.st_mtime_ns)
            if cached is not None:
                return cached
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if store is not None:
        store.remember_file_hash(path, stat.st_size, stat.st_mtime_ns, digest)
    return digest


def verify(model_file: ModelFile, store: Store | None = None) -> str:
    """The file's sha256, after checking it against the catalog's (when the catalog has one)."""
    actual = file_sha256(model_file.path, store)
    expected = model_file.expected_sha256
    if expected is not None and actual != expected:
        raise ModelError(
            f"{model_file.path} has sha256 {actual[:12]}… which does not match the catalog's "
            f"{expected[:12]}…: the file is corrupt or a different build; re-copy it"
        )
    return actual
