"""Settings: the paper's defaults, TOML overrides, and errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from mollia_edge.config import Config, load_config
from mollia_edge.errors import ConfigError


def _toml(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "mollia.toml"
    path.write_text(content, encoding="utf-8")
    return path


def test_default_config_holds_the_papers_values() -> None:
    cfg = Config()
    assert cfg.seed == 50
    assert (cfg.llm.samples, cfg.llm.temperature, cfg.llm.top_p) == (10, 0.7, 0.9)
    assert cfg.llm.flash_attn is True
    assert (cfg.molam.delta, cfg.molam.sigma) == (0.001, 0.9)
    assert cfg.al.alpha == 0.5
    assert (cfg.al.lambda_start, cfg.al.lambda_end) == (0.4, 1.0)
    assert (cfg.al.query_size, cfg.al.seed_size, cfg.al.rounds) == (50, 50, 10)


def test_load_config_without_path_is_the_default() -> None:
    assert load_config(None) == Config()


def test_toml_overrides_some_keys_and_keeps_the_others(tmp_path: Path) -> None:
    path = _toml(tmp_path, "seed = 7\n[llm]\nsamples = 20\ntop_p = 0.95\n[al]\nrounds = 3\n")
    cfg = load_config(path)
    default = Config()
    assert cfg.seed == 7
    assert (cfg.llm.samples, cfg.llm.top_p, cfg.al.rounds) == (20, 0.95, 3)
    assert cfg.llm.temperature == default.llm.temperature
    assert cfg.llm.flash_attn is True
    assert cfg.molam == default.molam
    assert cfg.al.query_size == default.al.query_size
    assert cfg.al.alpha == default.al.alpha


def test_empty_toml_file_gives_the_default(tmp_path: Path) -> None:
    assert load_config(_toml(tmp_path, "")) == Config()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("[sampling]\ntop_k = 5\n", "unknown configuration section.*sampling"),
        ("[llm]\ntop_k = 5\n", "unknown key.*llm.*top_k"),
        ("[molam]\nsigma = 1.5\n", "molam.sigma"),
        ("[molam]\ndelta = 0\n", "molam.delta"),
        ("[llm]\ntop_p = 0\n", "llm.top_p"),
        ("[llm]\ntemperature = 0\n", "llm.temperature"),
        ("[llm]\nsamples = 0\n", "llm.samples"),
        ("[al]\nquery_size = 0\n", "al.query_size"),
        ("[al]\nalpha = 1.5\n", "al.alpha"),
        ("llm = 3\n", "[llm]"),
    ],
)
def test_bad_setting_raises_config_error_naming_it(tmp_path: Path, content: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_config(_toml(tmp_path, content))


def test_missing_file_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="absent.toml"):
        load_config(path)


def test_invalid_toml_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[llm\nsamples = = 3\n")
    with pytest.raises(ConfigError, match="mollia.toml"):
        load_config(path)


def test_non_utf8_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"seed = 1 # \xe9\xff\n")
    with pytest.raises(ConfigError, match="latin1.toml"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "named"),
    [('seed = "x"', "seed"), ("seed = -1", "seed"), ('[llm]\nsamples = "ten"', "llm.samples"),
     ("[llm]\nsamples = 2.5", "llm.samples"), ("[llm]\nflash_attn = 1", "llm.flash_attn"),
     ('[llm]\nmemory_budget_gb = "lots"', "llm.memory_budget_gb"), ("[llm]\nmax_resident_models = 1.5", "llm.max_resident_models")],
)
def test_wrong_types_name_the_key(tmp_path, text, named):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(path)


def test_integer_given_for_a_float_setting_is_accepted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\ntemperature = 1\nn_threads = 4", encoding="utf-8")
    config = load_config(path)
    assert config.llm.temperature == 1.0 and isinstance(config.llm.temperature, float)
    assert config.llm.n_threads == 4


def test_an_optional_float_setting_takes_a_float(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\nmemory_budget_gb = 12.5\nmax_resident_models = 2", encoding="utf-8")
    config = load_config(path)
    assert config.llm.memory_budget_gb == 12.5 and config.llm.max_resident_models == 2
