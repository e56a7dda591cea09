"""mollia-edge as an installed tool, not a checkout: a wheel built from this tree and installed
into a fresh virtual environment lists the models and labels a small file from a folder outside
the checkout (the catalog shipped inside the package, the models folder given by --models-dir)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from jobs import write_input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (dependencies: this environment's, through a .pth
    file, so nothing is downloaded; the editable install of the checkout is not visible there)."""
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(folder / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    wheel = next((folder / "dist").glob("mollia_edge-*.whl"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--quiet", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv


def run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MOLLIA_EDGE_MODELS_DIR"}
    return subprocess.run([str(venv / "bin" / "mollia-edge"), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import mollia_edge, sys; print(mollia_edge.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(installed) in where and str(ROOT) not in where


def test_the_installed_tool_lists_models_and_labels_a_file(installed, tmp_path, tiny_model_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    (models / "encoders").symlink_to(ROOT / "models" / "encoders")  # set-up's files, as `mollia-edge setup` puts them
    listed = run(installed, tmp_path, "--models-dir", str(models), "models", "--all")
    assert listed.returncode == 0, listed.stderr
    assert "gemma-2-9b-it" in listed.stdout and "tiny.gguf" in listed.stdout  # the packaged catalog; the folder's file
    data = write_input(tmp_path / "in.csv", n=30)
    labelled = run(installed, tmp_path, "--models-dir", str(models), "label", str(data), "--labels", "pos,neg",
                   "--models", str(models / "tiny.gguf"), "--chat-format", "chatml", "--rounds", "1", "--batch", "4",
                   "--classifier", "head", "--quiet", "-o", "out.csv")
    assert labelled.returncode == 0, labelled.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 31


def test_without_a_models_folder_the_tool_says_where_it_looks(installed, tmp_path, monkeypatch):
    home = tmp_path / "home"
    listed = subprocess.run([str(installed / "bin" / "mollia-edge"), "models"], cwd=tmp_path, capture_output=True,
                            text=True, env={"HOME": str(home), "PATH": os.environ.get("PATH", "")}, timeout=300)
    assert "mollia-edge" in (listed.stdout + listed.stderr) and str(home) in (listed.stdout + listed.stderr)
