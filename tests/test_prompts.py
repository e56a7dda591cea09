"""The paper's prompt, chat formats, the text split, prompt keys and k-shot demonstrations."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from mollia_edge.errors import ConfigError
from mollia_edge.llm.prompts import CHAT_FORMATS, PromptSpec, draw_demonstrations

LABELS = ("negative", "positive")
FORMATS = ["none", "chatml", "gemma", "llama3", "mistral"]
TEXTS = ["great film", "", "  spaced  out ", "multi\nline {braces} Output:", "ünïcödé ✓"]
WRAP = {
    "none": ("", ""),
    "chatml": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "gemma": ("<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n"),
    "llama3": (
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": ("[INST] ", "[/INST]"),
}


def test_every_chat_format_is_covered() -> None:
    assert set(FORMATS) == set(CHAT_FORMATS)


def test_render_is_the_papers_appendix_prompt() -> None:
    prompt = PromptSpec(labels=("business", "sports", "world"), item="question").render("Who won?")
    assert prompt == (
        "Classify the given question based on the following categories: business, sports, world\n\n"
        "Task: Determine the most appropriate category for the question. Your response should be "
        "only one of these labels: business, sports, world, with no additional text or explanation.\n\n"
        "Question: Who won?\n\nOutput:"
    )


@pytest.mark.parametrize("chat_format", FORMATS)
def test_render_wraps_the_user_message_in_the_chat_format(chat_format: str) -> None:
    prompt = PromptSpec(labels=LABELS, chat_format=chat_format).render("great film")
    head, tail = WRAP[chat_format]
    assert prompt.startswith(head + "Classify the given text based on the following categories: negative, positive\n")
    assert prompt.endswith("Text: great film\n\nOutput:" + tail)
    assert "Task: Determine the most appropriate category for the text." in prompt


@pytest.mark.parametrize("chat_format", FORMATS)
@pytest.mark.parametrize("shots", [0, 1])
def test_split_puts_a_space_and_the_text_between_its_parts(chat_format: str, shots: int) -> None:
    demos = (("awful", "negative"), ("lovely", "positive"))[: shots * 2]
    spec = PromptSpec(labels=LABELS, chat_format=chat_format, demonstrations=demos)
    before, after = spec.split()
    for text in TEXTS:
        assert before + " " + text + after == spec.render(text)


def test_prefix_is_shared_by_all_texts_and_holds_the_demonstrations() -> None:
    demos = (("awful plot", "negative"), ("lovely cast", "positive"))
    spec = PromptSpec(labels=LABELS, chat_format="chatml", demonstrations=demos)
    prefix = spec.prefix
    for text in TEXTS:
        assert spec.render(text).startswith(prefix)
    assert re.search(r"Text: awful plot\n\nOutput: ?negative\n\n", prefix)
    assert re.search(r"Text: lovely cast\n\nOutput: ?positive\n\n", prefix)
    assert prefix.index("awful plot") < prefix.index("lovely cast")
    assert prefix.index("Task:") < prefix.index("awful plot")
    assert prefix.endswith("Text:")


def test_demonstration_answers_use_the_base_model_space() -> None:
    spec = PromptSpec(labels=LABELS, demonstrations=(("awful", "negative"),))
    assert "Text: awful\n\nOutput: negative\n\nText: x\n\nOutput:" in spec.render("x")


@pytest.mark.parametrize(("chat_format", "expected"), [(f, "positive") for f in FORMATS[1:]] + [("none", " positive")])
def test_answer_has_a_leading_space_only_for_base_models(chat_format: str, expected: str) -> None:
    assert PromptSpec(labels=LABELS, chat_format=chat_format).answer("positive") == expected


def test_key_is_stable_for_equal_specs() -> None:
    demos = (("awful", "negative"),)
    one = PromptSpec(labels=LABELS, item="review", chat_format="gemma", demonstrations=demos)
    two = PromptSpec(labels=tuple(LABELS), item="review", chat_format="gemma", demonstrations=tuple(demos))
    assert one.key() == two.key() == one.key()
    assert len(one.key()) == 64


@pytest.mark.parametrize(
    "changed",
    [
        {"labels": ("positive", "negative")},
        {"labels": ("negative", "positive", "neutral")},
        {"item": "review"},
        {"chat_format": "chatml"},
        {"demonstrations": (("awful", "negative"),)},
        {"instruction": "Pick one of {labels} for the {item}.\n\n"},
    ],
)
def test_key_changes_with_anything_that_changes_the_prompt(changed: dict) -> None:
    base = PromptSpec(labels=LABELS)
    assert PromptSpec(**{"labels": LABELS, **changed}).key() != base.key()


def test_key_changes_when_demonstrations_are_reordered() -> None:
    a = PromptSpec(labels=LABELS, demonstrations=(("x", "negative"), ("y", "positive")))
    b = PromptSpec(labels=LABELS, demonstrations=(("y", "positive"), ("x", "negative")))
    assert a.key() != b.key()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ("only",)}, "at least 2"),
        ({"labels": ("a", "b", "a")}, "distinct"),
        ({"labels": ("a", "")}, "non-empty"),
        ({"labels": ("a", "  ")}, "non-empty"),
        ({"labels": ("a", "b\nc")}, "single-line"),
        ({"labels": LABELS, "chat_format": "vicuna"}, "vicuna"),
        ({"labels": LABELS, "demonstrations": (("meh", "neutral"),)}, "neutral"),
    ],
)
def test_invalid_spec_raises_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PromptSpec(**kwargs)


# --- demonstrations ------------------------------------------------------------------------

ROW_LABELS = ["a"] * 10 + ["b"] * 6 + ["c"] * 2
ROW_TEXTS = [f"text {i}" for i in range(len(ROW_LABELS))]


def test_draw_gives_shots_per_label_of_real_rows() -> None:
    demos = draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=2, seed=0)
    assert Counter(label for _, label in demos) == {"a": 2, "b": 2, "c": 2}
    rows = set(zip(ROW_TEXTS, ROW_LABELS))
    assert all(demo in rows for demo in demos)
    assert len(set(demos)) == len(demos)


def test_draw_caps_at_the_rows_available() -> None:
    demos = draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=5, seed=0)
    assert Counter(label for _, label in demos) == {"a": 5, "b": 5, "c": 2}


def test_draw_is_reproducible_with_a_seed_and_differs_across_seeds() -> None:
    first = draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=3, seed=11)
    assert draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=3, seed=11) == first
    others = {draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=3, seed=s) for s in range(12, 17)}
    assert any(other != first for other in others)
    assert any(set(other) != set(first) for other in others)


def test_draw_with_zero_shots_is_empty() -> None:
    assert draw_demonstrations(ROW_TEXTS, ROW_LABELS, shots=0, seed=0) == ()


def test_draw_rejects_texts_and_labels_of_different_lengths() -> None:
    with pytest.raises(ConfigError, match="3 texts but 2 labels"):
        draw_demonstrations(["x", "y", "z"], ["a", "b"], shots=1, seed=0)


def test_labels_equal_after_normalisation_are_rejected() -> None:
    with pytest.raises(ConfigError, match="differ after normalisation"):
        PromptSpec(labels=("Sci/Tech", "sci/tech"))
