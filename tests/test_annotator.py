"""The cached annotator and the `annotate` command on the tiny model."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mollia_edge.cli import main
from mollia_edge.config import LLMConfig
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.prompts import PromptSpec
from mollia_edge.store import Store
from tiny_gguf import corrupt_copy

LABELS = ("a", "b", "ab")
TEXTS = ["great film", "dull", "great film", "zzz zzz"]
FAST = LLMConfig(n_ctx=2048, n_batch=128, n_seq_max=64, n_threads=1)


def _annotator(model: Path, store: Store, **llm: object) -> LLMAnnotator:
    spec = PromptSpec(labels=LABELS, item="review", chat_format="chatml")
    return LLMAnnotator(model, spec, dataclasses.replace(FAST, **llm), store)


def test_exact_signals_are_probabilities(tiny_model_path, tmp_path):
    with Store(tmp_path / "s.sqlite") as store, _annotator(tiny_model_path, store) as annotator:
        signals = annotator.annotate(TEXTS)
    assert signals.label_logprob.shape == signals.consistency.shape == (4, 3)
    assert np.all(signals.label_logprob < 0)
    np.testing.assert_allclose(signals.consistency.sum(axis=1) + signals.invalid, 1.0)
    np.testing.assert_allclose(signals.scores.sum(axis=1), 1.0)
    np.testing.assert_array_equal(signals.label_logprob[0], signals.label_logprob[2])  # same text
    assert annotator.computed == 3  # the repeated text is evaluated once


def test_cache_hit_computes_nothing_and_loads_no_model(tiny_model_path, tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        with _annotator(tiny_model_path, store) as first:
            expected = first.annotate(TEXTS[:2])
        with _annotator(tiny_model_path, store) as again:
            cached = again.annotate(TEXTS)
            assert again.computed == 1  # only the one new text
        with _annotator(tiny_model_path, store) as third:
            assert third.annotate(TEXTS).label_logprob.shape == (4, 3)
            assert third.computed == 0 and third.engine is None
        np.testing.assert_array_equal(cached.label_logprob[:2], expected.label_logprob)
        with _annotator(tiny_model_path, store, top_p=0.5) as changed:
            changed.annotate(TEXTS[:1])
            assert changed.computed == 1  # other settings, other cache entries


def test_a_new_prompt_is_evaluated_only_when_a_text_needs_it(tiny_model_path, tmp_path, monkeypatch):
    """use_prompt on a loaded model: texts already in the store cost no prefix evaluation;
    the first text that needs the model evaluates the new prefix once."""
    from mollia_edge.llm.engine import LlamaEngine

    prefixes = []
    real = LlamaEngine.set_prefix
    monkeypatch.setattr(LlamaEngine, "set_prefix",
                        lambda self, tokens, saved=None: (prefixes.append(len(tokens)), real(self, tokens, saved))[1])
    other = PromptSpec(labels=LABELS, item="review", chat_format="chatml", instruction="Classify the review.")
    with Store(tmp_path / "s.sqlite") as store:
        with _annotator(tiny_model_path, store) as first:
            first.use_prompt(other)
            stored = first.annotate(TEXTS[:2])
        with _annotator(tiny_model_path, store) as annotator:
            annotator.annotate(TEXTS[3:])  # loads the model under the default prompt
            assert len(prefixes) == 2
            annotator.use_prompt(other)
            again = annotator.annotate(TEXTS[:2])  # every text in the store: no prefix evaluated
            assert len(prefixes) == 2 and annotator.computed == 1
            annotator.annotate(["a text not seen yet"])
            assert len(prefixes) == 3
        np.testing.assert_array_equal(again.label_logprob, stored.label_logprob)


def test_sampled_consistency_is_the_share_of_answers(tiny_model_path, tmp_path):
    with Store(tmp_path / "s.sqlite") as store, _annotator(tiny_model_path, store, consistency="sampled") as ann:
        signals = ann.annotate(TEXTS)
    for answers, shares, invalid in zip(signals.answers, signals.consistency, signals.invalid):
        assert len(answers) == 10
        counts = [sum(a == label for a in answers) / 10 for label in LABELS]
        np.testing.assert_allclose(shares, counts)
        assert invalid == pytest.approx(1 - sum(counts))
    assert signals.consistency.sum() > 0  # the boosted labels do get sampled


def test_same_seed_same_answers_other_seed_other_answers(tiny_model_path, tmp_path):
    runs = []
    for seed in (50, 50, 51):
        with _annotator(tiny_model_path, None, consistency="sampled", seed=seed) as annotator:
            runs.append(annotator.annotate(TEXTS).answers)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_long_text_is_cut_and_marked(tiny_model_path):
    with _annotator(tiny_model_path, None, max_text_tokens=16, long_texts="truncate") as annotator:
        signals = annotator.annotate(["x" * 100, "short"])
        tokens, cut = annotator.prompt_tokens("x" * 100)
        reference, _ = annotator.prompt_tokens("")
    x = ord("x") + 5  # byte tokens follow the five special tokens
    assert signals.truncated.tolist() == [True, False]
    assert cut and tokens.count(x) - reference.count(x) == 16


def test_control_token_text_in_a_text_stays_plain_text(tiny_model_path):
    with _annotator(tiny_model_path, None) as annotator:
        tokens, _ = annotator.prompt_tokens("stop <|im_end|> here")
        reference, _ = annotator.prompt_tokens("stop here")
    im_end = 4
    assert tokens.count(im_end) == reference.count(im_end)  # only the template's own


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_annotate_command_writes_signals_and_reports_accuracy(tiny_model_path, tmp_path, capsys):
    data = _write_csv(tmp_path / "in.csv", [{"text": t, "gold": g} for t, g in zip(TEXTS, "abab")])
    out = tmp_path / "out" / "signals.csv"
    args = [
        "annotate", str(data), "--labels", "a,b,ab", "--label-column", "gold", "--models",
        str(tiny_model_path), "--chat-format", "chatml", "--store", str(tmp_path / "s.sqlite"),
        "--out", str(out),
    ]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["row"] for r in rows] == ["1", "2", "3", "4"]
    assert {"logprob_ab", "prob_b", "consistency_a", "invalid", "predicted"} <= set(rows[0])
    assert sum(float(rows[0][f"prob_{label}"]) for label in ("a", "b", "ab")) == pytest.approx(1, abs=1e-5)
    assert "great film" not in out.read_text(encoding="utf-8")  # texts are not copied out
    assert "accuracy" in capsys.readouterr().out


def test_annotate_command_with_corrupt_model_fails_cleanly(tiny_model_path, tmp_path, capsys):
    data = _write_csv(tmp_path / "in.csv", [{"text": t} for t in TEXTS])
    broken = corrupt_copy(tiny_model_path, tmp_path / "broken.gguf", "truncate")
    out = tmp_path / "signals.csv"
    args = ["annotate", str(data), "--labels", "a,b", "--models", str(broken), "--out", str(out),
            "--store", str(tmp_path / "s.sqlite")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "broken.gguf" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"body": "x"}], [], "text"),
        ([{"text": "x", "gold": "zebra"}], ["--label-column", "gold"], "zebra"),
    ],
)
def test_annotate_command_rejects_bad_input_in_one_line(tiny_model_path, tmp_path, capsys, rows, extra, message):
    data = _write_csv(tmp_path / "in.csv", rows)
    args = ["annotate", str(data), "--labels", "a,b", "--models", str(tiny_model_path), *extra,
            "--store", str(tmp_path / "s.sqlite")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_exact_consistency_is_the_limit_of_sampled_where_spellings_differ(tiny_model_path, tmp_path):
    """Labels "A" and "B" while the tiny model writes "a" and "b": sampled consistency counts
    "a" for "A" (answers are normalised), so exact consistency must too. With 400 samples the
    sampled shares lie within sampling error of the exact ones."""
    texts = ["great film", "dull plot"]
    spec = PromptSpec(labels=("A", "B"), item="review", chat_format="chatml")
    with Store(tmp_path / "s.sqlite") as store:
        spelled = dataclasses.replace(FAST, consistency="exact", answer_spellings=True)
        with LLMAnnotator(tiny_model_path, spec, spelled, store) as exact:
            expected = exact.annotate(texts).consistency
        sampled_llm = dataclasses.replace(FAST, consistency="sampled", samples=200, n_seq_max=256, n_batch=512,
                                          n_ctx=8192)
        with LLMAnnotator(tiny_model_path, spec, sampled_llm, store) as sampled:
            shares = sampled.annotate(texts).consistency
    assert expected.sum(axis=1).min() > 0.1  # "a" and "b" counted: without the spellings this is ~0
    error = np.sqrt(expected * (1 - expected) / 200)
    assert np.all(np.abs(shares - expected) < 4 * error + 0.01), (shares, expected)
