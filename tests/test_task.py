"""The task file (`--task`): label descriptions in the shared prefix, aliases the answers count,
the demonstrations' format, one clear error line naming the key."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mollia_edge.cli import main
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.prompts import PAPER_INSTRUCTION, PromptSpec
from mollia_edge.llm.scoring import answer_shares
from mollia_edge.task import load_task, task_toml, with_task

TASK = """
item = "review"

[labels.pos]
description = "The reviewer liked it."
aliases = ["a", "good"]

[labels.neg]
description = "The reviewer did not like it."
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_descriptions_go_into_the_shared_prefix_in_the_jobs_label_order(tmp_path):
    task = load_task(write(tmp_path / "task.toml", TASK))
    assert task.labels == ("pos", "neg") and task.aliases == (("a", "good"), ())
    prompt = with_task(PromptSpec(labels=("neg", "pos"), item="text"), task)
    before, after = prompt.split()
    assert "Label descriptions:\n- neg: The reviewer did not like it.\n- pos: The reviewer liked it.\n" in before
    assert prompt.aliases == ((), ("a", "good")) and prompt.item == "review"
    assert before.endswith("Review:") and after == "\n\nOutput:"
    assert prompt.key() != PromptSpec(labels=("neg", "pos"), item="review").key()


def test_a_prompt_without_a_task_keeps_its_key_so_stored_outputs_stay_valid():
    prompt = PromptSpec(labels=("a", "b"), item="text")
    blob = json.dumps([prompt.labels, "text", PAPER_INSTRUCTION, "none", ()], ensure_ascii=False)
    assert prompt.key() == hashlib.sha256(blob.encode("utf-8")).hexdigest()
    assert "Label descriptions" not in prompt.render("x")


def test_the_demonstration_format_writes_demonstrations_and_the_text_to_label(tmp_path):
    task = load_task(write(tmp_path / "t.toml", 'demonstration = "Text: {text}\\nSentiment: {label}\\n"\n' + TASK))
    prompt = with_task(PromptSpec(labels=("pos", "neg"), demonstrations=(("loved it", "pos"),)), task)
    assert prompt.render("meh").endswith("Text: loved it\nSentiment: pos\nText: meh\nSentiment:")


def test_aliases_count_as_their_label_in_sampled_answers(tmp_path):
    prompt = with_task(PromptSpec(labels=("pos", "neg")), load_task(write(tmp_path / "t.toml", TASK)))
    shares, invalid = answer_shares(["Good.", "a", "neg", "maybe"], prompt.labels, prompt.answer_index())
    np.testing.assert_allclose(shares, [0.5, 0.25])
    assert invalid == pytest.approx(0.25)


def test_exact_consistency_counts_an_alias_the_model_writes(tiny_model_path):
    """The tiny model writes "a" often: as an alias of "pos" it moves mass from invalid to "pos"."""
    bare = PromptSpec(labels=("pos", "neg"), chat_format="chatml")
    alias = PromptSpec(labels=("pos", "neg"), chat_format="chatml", aliases=(("a",), ()))
    texts = ["good film", "bad film"]
    with LLMAnnotator(tiny_model_path, bare) as annotator:
        before = annotator.annotate(texts)
    with LLMAnnotator(tiny_model_path, alias) as annotator:
        after = annotator.annotate(texts)
    assert np.all(after.consistency[:, 0] > before.consistency[:, 0] + 0.05)
    np.testing.assert_allclose(after.consistency[:, 1], before.consistency[:, 1], atol=1e-3)
    np.testing.assert_allclose(after.label_logprob, before.label_logprob, atol=1e-3)  # the label's own tokens


@pytest.mark.parametrize("text, key", [
    ('colour = "red"\n' + TASK, "colour"),
    (TASK + '[labels.neutral]\ncolour = "grey"\n', "labels.neutral.colour"),
    ('instruction = "Sort the {things}"\n' + TASK, "instruction"),
    ('demonstration = "{label} then {text}"\n' + TASK, "demonstration"),
    (TASK.replace('item = "review"', 'item = ""'), "item"),
    (TASK.replace('aliases = ["a", "good"]', 'aliases = "a"'), "labels.pos.aliases"),
    (TASK.replace('aliases = ["a", "good"]', 'aliases = ["neg"]'), "alias"),
    ("[labels.only]\n", "labels"),
    ("item = 'x\n", "TOML"),
])
def test_an_invalid_task_file_gets_one_error_line_naming_the_key(tmp_path, capsys, text, key):
    task = write(tmp_path / "task.toml", text)
    data = tmp_path / "in.csv"
    data.write_text("text\nhello\nworld\n", encoding="utf-8")
    assert main(["annotate", str(data), "--task", str(task), "--store", str(tmp_path / "s.sqlite")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "internal error" not in err[0], err


def test_labels_that_differ_from_the_task_files_are_refused(tmp_path, capsys):
    task = write(tmp_path / "task.toml", TASK)
    assert main(["annotate", "--dataset", "rotten-tomatoes", "--n", "4", "--task", str(task),
                 "--store", str(tmp_path / "s.sqlite")]) != 0
    err = capsys.readouterr().err
    assert "task file's labels" in err and "internal error" not in err


def test_annotate_takes_the_label_set_and_aliases_from_the_task(tmp_path, tiny_model_path):
    task = write(tmp_path / "task.toml", TASK.replace('"good"', '"b"'))
    data = tmp_path / "in.csv"
    data.write_text("text\ngood film\nbad film\n", encoding="utf-8")
    invalid = {}
    for name, how in (("bare", ["--labels", "pos,neg"]), ("task", ["--task", str(task)])):
        out = tmp_path / f"{name}.csv"
        assert main(["annotate", str(data), *how, "--models", str(tiny_model_path), "--chat-format", "chatml",
                     "--store", str(tmp_path / "s.sqlite"), "--out", str(out)]) == 0
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert len(rows) == 2
        invalid[name] = [float(r["invalid"]) for r in rows]
    assert all(t < b - 0.05 for t, b in zip(invalid["task"], invalid["bare"]))  # "a" and "b" now count as pos


def test_the_tuis_task_file_reads_back(tmp_path):
    text = task_toml(["pos", 'ne"g'], ["liked it", ""], item="review")
    task = load_task(write(tmp_path / "t.toml", text))
    assert task.labels == ("pos", 'ne"g') and task.descriptions == ("liked it", "") and task.item == "review"


def test_the_label_job_prompts_every_model_with_the_task_files_wording(tmp_path, tiny_model_path, monkeypatch):
    import mollia_edge.llm.panel as panel_module
    from jobs import args, write_input

    prompts = []
    real = panel_module.LLMAnnotator

    class Recording(real):
        def annotate(self, texts, progress=None):
            prompts.append(self.prompt)
            return super().annotate(texts, progress)

    monkeypatch.setattr(panel_module, "LLMAnnotator", Recording)
    task = write(tmp_path / "task.toml", TASK)
    data = write_input(tmp_path / "in.csv")
    assert main(args(data, tmp_path / "out.csv", tiny_model_path, "--task", str(task))) == 0
    assert prompts and all("- pos: The reviewer liked it." in p.prefix and p.aliases for p in prompts)
