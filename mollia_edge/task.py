"""The task definition file (``--task task.toml``): what the labels mean, in the prompt.

::

    item = "review"                  # what a row is (optional)
    multi_label = false              # true: a text may carry several labels (optional)
    instruction = "..."              # optional; fields {item} and {labels}
    demonstration = "{Item}: {text}\\n\\nOutput: {label}\\n\\n"   # optional

    [labels.negative]
    description = "The reviewer did not like the film."
    aliases = ["bad", "neg"]         # answers that also mean this label (optional)

    [labels.positive]
    description = "The reviewer liked the film."

The labels' tables, in file order, are the label set (a job's ``--labels`` or seed labels must
be the same set). Descriptions go into the prompt's shared prefix, after the instruction.
"""

from __future__ import annotations

import dataclasses
import string
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import check_label_set
from .errors import ConfigError, quoted, quoted_list
from .llm.prompts import DEMONSTRATION_FORMAT, PAPER_INSTRUCTION, PromptSpec

_TOP_KEYS = {"item", "instruction", "demonstration", "labels", "multi_label"}
_LABEL_KEYS = {"description", "aliases"}
_FIELDS = {"instruction": {"item", "labels"}, "demonstration": {"item", "Item", "text", "label"}}


@dataclass(frozen=True)
class Task:
    """A checked task file. labels: the label set in file order; descriptions, aliases: one
    entry per label."""

    labels: tuple[str, ...]
    descriptions: tuple[str, ...]
    aliases: tuple[tuple[str, ...], ...]
    item: str | None = None
    instruction: str = PAPER_INSTRUCTION
    demonstration: str = DEMONSTRATION_FORMAT
    multi_label: bool = False
    """The task is multi-label (:mod:`mollia_edge.multilabel`): its prompts ask yes or no per label,
    with the item and the descriptions from here (``instruction`` and ``demonstration`` are
    single-label wordings and are not used)."""

    def prompt(self, prompt: PromptSpec) -> PromptSpec:
        """``prompt`` (whose labels are this task's, in any order) with the task's wording."""
        if set(prompt.labels) != set(self.labels):
            raise ConfigError(f"the task file's labels {quoted_list(self.labels)} differ from the job's "
                              f"{quoted_list(prompt.labels)}; give the same label set")
        position = {label: i for i, label in enumerate(self.labels)}
        order = [position[label] for label in prompt.labels]
        return dataclasses.replace(
            prompt, item=self.item or prompt.item, instruction=self.instruction,
            descriptions=tuple(self.descriptions[i] for i in order) if any(self.descriptions) else (),
            aliases=tuple(self.aliases[i] for i in order) if any(self.aliases) else (),
            demonstration_format=self.demonstration,
        )


def with_task(prompt: PromptSpec, task: Task | None) -> PromptSpec:
    """``prompt`` as the task file words it; unchanged without one."""
    return task.prompt(prompt) if task is not None else prompt


def load_task(path: Path) -> Task:
    """Read and check a task file; a :class:`ConfigError` naming the key on any problem."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"cannot read the task file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"task file {path}: not valid TOML ({exc})") from None
    try:
        return _task(data)
    except ConfigError as exc:
        raise ConfigError(f"task file {path}: {exc}") from None


def _task(data: dict[str, Any]) -> Task:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {quoted(unknown[0])}; the keys are {', '.join(sorted(_TOP_KEYS))}")
    texts = {key: _string(data, key) for key in ("item", "instruction", "demonstration") if key in data}
    for key, allowed in _FIELDS.items():
        if key in texts:
            _check_fields(key, texts[key], allowed)
    demonstration = texts.get("demonstration", DEMONSTRATION_FORMAT)
    if not 0 <= demonstration.find("{text}") < demonstration.find("{label}"):
        raise ConfigError("demonstration must contain {text} and, after it, {label} (where the answer goes)")
    labels = data.get("labels")
    if not isinstance(labels, dict) or len(labels) < 2:
        raise ConfigError("labels: give a [labels.NAME] table for each of at least 2 labels")
    descriptions, aliases = [], []
    for label, entry in labels.items():
        where = f"labels.{label}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table (description = ..., aliases = [...])")
        extra = sorted(set(entry) - _LABEL_KEYS)
        if extra:
            raise ConfigError(f"unknown key {quoted(where + '.' + extra[0])}; a label has description and aliases")
        descriptions.append(" ".join(_string(entry, "description", where).split()) if "description" in entry else "")
        aliases.append(_strings(entry.get("aliases", []), f"{where}.aliases"))
    try:  # the same checks as --labels and a label column: one rule however the labels arrive
        names = check_label_set(labels)
    except ConfigError as exc:
        raise ConfigError(f"labels: {exc}") from None
    multi_label = data.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise ConfigError("multi_label must be true or false")
    task = Task(labels=names, descriptions=tuple(descriptions), aliases=tuple(aliases),
                item=texts.get("item"), instruction=texts.get("instruction", PAPER_INSTRUCTION),
                demonstration=demonstration, multi_label=multi_label)
    PromptSpec(labels=task.labels, item=task.item or "text", descriptions=task.descriptions, aliases=task.aliases,
               instruction=task.instruction, demonstration_format=task.demonstration)  # labels, aliases
    return task


def _string(table: dict[str, Any], key: str, where: str = "") -> str:
    value = table[key]
    name = f"{where}.{key}" if where else key
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and "\n" not in v for v in value):
        raise ConfigError(f"{name} must be a list of one-line strings")
    return tuple(v.strip() for v in value)


def _check_fields(key: str, template: str, allowed: set[str]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} (write a literal brace as {{{{ or }}}})") from None
    bad = sorted(names - allowed)
    if bad:
        raise ConfigError(f"{key}: unknown field {{{bad[0]}}}; the fields are "
                          + ", ".join("{" + a + "}" for a in sorted(allowed)))


def task_toml(labels: Sequence[str], descriptions: Sequence[str], item: str | None = None,
              instruction: str | None = None) -> str:
    """A task file for ``labels`` with their ``descriptions`` (the TUI's form writes it)."""
    lines = []
    if item:
        lines.append(f"item = {_toml_string(item)}")
    if instruction:
        lines.append(f"instruction = {_toml_string(instruction)}")
    for label, text in zip(labels, descriptions):
        lines += ["", f"[labels.{_toml_string(label)}]"]
        if text.strip():
            lines.append(f"description = {_toml_string(' '.join(text.split()))}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
