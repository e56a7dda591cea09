"""Prompts: the paper's classification template, chat formats and k-shot demonstrations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, quoted, quoted_list
from .scoring import normalise_answer

PAPER_INSTRUCTION = (
    "Classify the given {item} based on the following categories: {labels}\n\n"
    "Task: Determine the most appropriate category for the {item}. Your response should be "
    "only one of these labels: {labels}, with no additional text or explanation.\n\n"
)
"""The appendix prompt of the paper (its "question" is the ``item``)."""

# user message -> the text the model sees up to where its answer starts
CHAT_FORMATS: dict[str, str] = {
    "none": "{content}",
    "chatml": "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
    "gemma": "<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
    "llama3": (
        "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": "[INST] {content}[/INST]",
}

_TEXT_MARK = "\x00TEXT\x00"


def _is_wrapper(chat_format: str) -> bool:
    """A chat format written out (a model file's template): a format string with one {content}."""
    try:
        chat_format.format(content="")
    except (KeyError, IndexError, ValueError):
        return False
    return chat_format.count("{content}") == 1


def chat_format_of(wrapper: str) -> str:
    """The name of the chat format that writes what ``wrapper`` (a format string with one
    ``{content}``) writes, or the wrapper itself when none does."""
    for name, known in CHAT_FORMATS.items():
        if name != "none" and known == wrapper:
            return name
    return wrapper

DEMONSTRATION_FORMAT = "{Item}: {text}\n\nOutput: {label}\n\n"
"""How a demonstration is written (the paper's); the text to label follows the same format up to
``{label}``, where the model's answer starts. Fields: ``{item}``, ``{Item}`` (capitalised),
``{text}``, ``{label}``."""


@dataclass(frozen=True)
class PromptSpec:
    """Everything that decides the prompt for a text, apart from the text itself."""

    labels: tuple[str, ...]
    item: str = "text"
    instruction: str = PAPER_INSTRUCTION
    chat_format: str = "none"
    demonstrations: tuple[tuple[str, str], ...] = ()
    descriptions: tuple[str, ...] = ()
    """One line per label (``""``: none), listed after the instruction; empty: no list."""
    aliases: tuple[tuple[str, ...], ...] = ()
    """Per label, other answers that mean it (sampled answers and exact consistency count them)."""
    demonstration_format: str = DEMONSTRATION_FORMAT

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ConfigError(f"need at least 2 labels, got {len(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels must be distinct")
        if any(not label.strip() or "\n" in label for label in self.labels):
            raise ConfigError("labels must be non-empty single-line strings")
        if len({normalise_answer(label) for label in self.labels}) != len(self.labels):
            raise ConfigError(
                "labels must differ after normalisation (case, quotes, punctuation, a leading "
                f"article), or sampled answers cannot tell them apart: {quoted_list(self.labels)}"
            )
        if self.chat_format not in CHAT_FORMATS and not _is_wrapper(self.chat_format):
            raise ConfigError(
                f"unknown chat format {quoted(self.chat_format)}; use one of {', '.join(CHAT_FORMATS)}"
            )
        unknown = {label for _, label in self.demonstrations} - set(self.labels)
        if unknown:
            raise ConfigError(f"demonstration label(s) not in the label set: {quoted_list(sorted(unknown))}")
        for name, values in (("descriptions", self.descriptions), ("aliases", self.aliases)):
            if values and len(values) != len(self.labels):
                raise ConfigError(f"{len(values)} {name} for {len(self.labels)} labels; give one per label")
        self.answer_index()  # aliases that clash with a label or with each other

    def answer_index(self) -> dict[str, int]:
        """Normalised answer -> label index, for each label and its aliases."""
        index = {normalise_answer(label): k for k, label in enumerate(self.labels)}
        for k, names in enumerate(self.aliases):
            for alias in names:
                key = normalise_answer(alias)
                if not key or index.get(key, k) != k:
                    raise ConfigError(f"the alias {quoted(alias)} of {quoted(self.labels[k])} is empty or means "
                                      "another label; give each alias to one label only")
                index[key] = k
        return index

    def _descriptions(self) -> str:
        lines = [f"- {label}: {text}" for label, text in zip(self.labels, self.descriptions) if text]
        return "Label descriptions:\n" + "\n".join(lines) + "\n\n" if lines else ""

    def _user_message(self, text: str) -> str:
        fields = {"item": self.item, "Item": self.item.capitalize()}
        demos = "".join(self.demonstration_format.format(**fields, text=demo, label=label)
                        for demo, label in self.demonstrations)
        query = self.demonstration_format.split("{label}")[0].format(**fields, text=text).rstrip(" ")
        instruction = self.instruction.format(item=self.item, labels=", ".join(self.labels))
        return f"{instruction}{self._descriptions()}{demos}{query}"

    def render(self, text: str) -> str:
        """The whole prompt for ``text``, ending where the model's answer starts."""
        return CHAT_FORMATS.get(self.chat_format, self.chat_format).format(content=self._user_message(text))

    def split(self) -> tuple[str, str]:
        """(prompt before the text, prompt after it): ``render(t) == before + " " + t + after``."""
        before, after = self.render(_TEXT_MARK).split(_TEXT_MARK)
        return before.removesuffix(" "), after

    @property
    def prefix(self) -> str:
        """The part shared by every text: instruction, label list and demonstrations."""
        return self.split()[0]

    def answer(self, label: str) -> str:
        """The continuation that spells ``label``: after ``Output:`` a base model writes a space
        first; a chat model answers at the start of its turn."""
        return f" {label}" if self.chat_format == "none" else label

    def key(self) -> str:
        """A hash of the spec: same key, same prompt for every text."""
        fields: list = [self.labels, self.item, self.instruction, self.chat_format, self.demonstrations]
        if self.descriptions or self.aliases or self.demonstration_format != DEMONSTRATION_FORMAT:
            fields += [self.descriptions, self.aliases, self.demonstration_format]  # keys stay as they were without
        blob = json.dumps(fields, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def draw_demonstrations(
    texts: Sequence[str], labels: Sequence[str], shots: int, seed: int
) -> tuple[tuple[str, str], ...]:
    """Up to ``shots`` labelled rows per label, drawn at random (seeded), in shuffled order."""
    if len(texts) != len(labels):
        raise ConfigError(f"{len(texts)} texts but {len(labels)} labels for demonstrations")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        rows = [i for i, value in enumerate(labels) if value == label]
        chosen.extend(rng.choice(rows, size=min(shots, len(rows)), replace=False).tolist())
    rng.shuffle(chosen)
    return tuple((texts[i], labels[i]) for i in chosen)
