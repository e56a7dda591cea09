"""The benchmarks' replay of recorded LLM outputs (scripts/replay.py) and their hashed TF-IDF
features (scripts/lexical.py): benchmark code, kept out of the library."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from lexical import hashed_tfidf, with_lexical_features  # noqa: E402
from replay import TREC_LABELS, TREC_LLMS, load_replay, load_trec_replay  # noqa: E402

from mollia_edge.al.annotators import SingleLLMAnnotator  # noqa: E402
from mollia_edge.errors import ConfigError, DataError  # noqa: E402

PAPER_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mollia-paper"


def _write_replay(folder: Path, llms=TREC_LLMS, rows=3):
    for i, llm in enumerate(llms):
        with (folder / f"trec_{llm}.jsonl").open("w") as handle:
            for r in range(rows):
                answers = [" Human", "human", "entity", '"entity"'] + ["numeric"] * 6
                record = {"text": f"question {r}?", "label": TREC_LABELS[r], "llm_logits": [i, 0, 0.5, 0, 0, r],
                          "llm_label": answers}
                handle.write(json.dumps(record) + "\n")


def test_replay_loader_reads_signals(tmp_path):
    _write_replay(tmp_path)
    data = load_trec_replay(tmp_path)
    assert data.texts == ["question 0?", "question 1?", "question 2?"] and data.llm_names == TREC_LLMS
    assert data.gold.tolist() == [0, 1, 2]
    assert data.scores.shape == data.consistency.shape == (3, 5, 6)
    assert data.scores[1, 3].tolist() == [3, 0, 0.5, 0, 0, 1]
    # ' Human' and 'human' count for human; '"entity"' is no label; 6 x numeric
    np.testing.assert_allclose(data.consistency[0, 0], [0, 0.1, 0, 0.2, 0, 0.6])


def test_replay_loader_refuses_mismatched_or_missing_files(tmp_path):
    _write_replay(tmp_path, rows=3)
    _write_replay(tmp_path, llms=("yi",), rows=2)
    with pytest.raises(DataError, match="same rows"):
        load_trec_replay(tmp_path)
    with pytest.raises(DataError, match="missing"):
        load_trec_replay(tmp_path, llms=("gemma", "phi"))


def test_any_recorded_dataset_replays_with_every_llm_file_and_its_gold_label_set(tmp_path):
    labels = ("sports", "arts", "news")  # the files' llm_logits in sorted order: arts, news, sports
    for llm, right in (("alpha", 1.0), ("beta", 0.0), ("gamma", 0.5)):
        with (tmp_path / f"toy_{llm}.jsonl").open("w") as handle:
            for r in range(6):
                gold = sorted(labels).index(labels[r % 3])
                logits = [0.1] * 3
                logits[gold if r % 2 < 2 * right else (gold + 1) % 3] = 0.8
                handle.write(json.dumps({"text": f"t{r}", "label": labels[r % 3], "llm_logits": logits,
                                         "llm_label": [labels[r % 3]]}) + "\n")
    (tmp_path / "other_alpha.jsonl").write_text("")  # another dataset's file: not read
    data = load_replay(tmp_path, "toy")
    assert data.llm_names == ("alpha", "beta", "gamma") and data.labels == ("arts", "news", "sports")
    assert data.scores.shape == (6, 3, 3) and data.gold.tolist() == [2, 0, 1, 2, 0, 1]
    assert load_replay(tmp_path, "toy", labels=("news", "arts", "sports")).gold.tolist() == [2, 1, 0, 2, 1, 0]
    with pytest.raises(DataError, match="no toy2_<llm>.jsonl"):
        load_replay(tmp_path, "toy2")
    from bench_al import best_llm

    assert best_llm(data, np.arange(6)) == 0  # chosen on the seed rows' gold, not by name


@pytest.mark.skipif(not PAPER_DATA.is_dir(), reason="the paper's recorded TREC files are not here")
def test_replay_loader_on_the_recorded_trec_files():
    data = load_trec_replay(PAPER_DATA)
    assert data.scores.shape == (5452, 5, 6) and len(data.texts) == 5452
    yi = SingleLLMAnnotator(data.scores, data.consistency, TREC_LLMS.index("yi"), "yi")
    y, _ = yi.annotate(np.arange(5452))
    assert np.mean(y == data.gold) == pytest.approx(0.768, abs=0.002)


# ------------------------------------------------------------------------------ lexical features
def test_hashed_tfidf_is_stable_normalised_and_sees_word_pairs():
    texts = ["How many people live here?", "How many?", "Who lives here?", ""]
    features = hashed_tfidf(texts, bits=10)
    assert features.shape == (4, 1024) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features[:3], axis=1), 1, rtol=1e-5)
    assert not features[3].any()
    np.testing.assert_array_equal(features, hashed_tfidf(texts, bits=10))
    assert np.count_nonzero(features[1]) == 3  # how, many, "how many"
    combined = with_lexical_features(np.ones((4, 5), np.float32), texts, bits=10)
    assert combined.shape == (4, 1029) and np.array_equal(combined[:, 5:], features)
    with pytest.raises(ConfigError, match="bits"):
        hashed_tfidf(texts, bits=30)


def test_a_recorded_replay_reads_back_as_recorded(tmp_path):
    """scripts/record_replay.py's rows: what load_replay reads is what the models said."""
    from record_replay import replay_rows

    labels = ("negative", "positive")
    mass = np.array([[0.7, 0.1], [0.05, 0.9], [0.0, 0.0]])
    answers = (("negative",) * 3, ("positive", "positive", "negative"), ("", "", ""))
    for llm, scale in (("smollm2", 1.0), ("gemma3", 0.5)):
        rows = replay_rows(["bad", "good", "meh"], ["negative", "positive", "negative"], labels, mass * scale, answers)
        (tmp_path / f"rt_{llm}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_replay(tmp_path, "rt")
    assert data.labels == labels and data.llm_names == ("gemma3", "smollm2")
    assert data.gold.tolist() == [0, 1, 0]
    np.testing.assert_allclose(data.scores[:, 1], mass)
    np.testing.assert_allclose(data.scores[:, 0], mass * 0.5)
    np.testing.assert_allclose(data.consistency[1, 0], [1 / 3, 2 / 3])
    np.testing.assert_allclose(data.consistency[2, 0], [0, 0])
