"""The job's panel of LLM annotators: one per model, each with its prompt plan; the signals of
any rows, every output cached in the session store as it is made.

* :class:`LLMPanel` - ``signals(rows)`` gives scores and consistency (n, N, K) of the rows,
  each model scoring every row with the prompt its :class:`PromptPlan` gives that row.
* :meth:`LLMPanel.choose_shots` - per model, the number of demonstrations that scores the
  seed rows best (accuracy, then log-likelihood of the seed label; ties to fewer shots), or
  demonstrations retrieved per text where they are clearly better (a prefix per text costs
  more). The seed rows are scored cross-fitted (:mod:`mollia_edge.llm.demonstrations`), so a
  model that gets worse with demonstrations gets none.

Models are loaded on first need. With ``max_resident`` set, at most that many stay loaded
together: the least recently used one is released before another loads (models take turns,
:mod:`mollia_edge.llm.residency`); otherwise they stay loaded until :meth:`LLMPanel.close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import row_log_losses
from ..config import LLMConfig
from ..store import Store
from .annotator import LLMAnnotator
from .demonstrations import PromptPlan, RetrievedPlan
from .prompts import PromptSpec

Progress = Callable[[str, int, int], None]
Plan = PromptPlan | RetrievedPlan


@dataclass(frozen=True)
class PanelModel:
    """One model of the panel: its display name, file, and the zero-shot prompt for it."""

    name: str
    path: Path
    prompt: PromptSpec
    llm: LLMConfig | None = None
    """Its own llama.cpp settings (``Config.llm_for``); None: the panel's."""


@dataclass(frozen=True)
class ShotChoice:
    """What :meth:`LLMPanel.choose_shots` measured for one model: per number of shots, its
    accuracy on the seed rows, and the number it chose."""

    accuracy: dict[int | str, float]
    chosen: int | str
    """A number of shared demonstrations per label, or ``"retrieved"``."""


class LLMPanel:
    """The job's LLMs over the texts ``texts`` (all rows of the input)."""

    def __init__(self, models: Sequence[PanelModel], texts: Sequence[str], llm: LLMConfig, store: Store,
                 progress: Progress | None = None, max_resident: int | None = None,
                 remote: Callable[[PanelModel], Any] | None = None) -> None:
        self.models, self.texts, self.llm, self.store, self.progress = list(models), texts, llm, store, progress
        self.max_resident = max_resident
        self.remote = remote
        """Per model, a pool that evaluates its texts elsewhere (Ray), or None: in this process."""
        self._recent: list[str] = []
        """Names of the models used so far, least recently used first."""
        self.names = [m.name for m in self.models]
        self.n_labels = len(self.models[0].prompt.labels) if self.models else 0
        self.plans = {m.name: PromptPlan.zero_shot(m.prompt) for m in self.models}
        self._annotators: dict[str, LLMAnnotator] = {}
        self.truncated: set[int] = set()
        """Rows some model read cut (``llm.long_texts = "truncate"``, or past ``llm.max_chunks``)."""
        self.chunked: set[int] = set()
        """Rows some model read in chunks."""
        self.seconds = dict.fromkeys(self.names, 0.0)
        """Per model: seconds spent annotating (texts found in the store cost next to nothing)."""
        self.computed = dict.fromkeys(self.names, 0)
        """Per model: texts evaluated by the model (not served from the store)."""
        self.loads = dict.fromkeys(self.names, 0)
        """Per model: how many times it was loaded."""
        self.released: list[str] = []
        """Models released by :meth:`release` (in order)."""

    def close(self) -> None:
        for annotator in self._annotators.values():
            annotator.close()
            if annotator.remote is not None:
                annotator.remote.close()
        self._annotators.clear()

    def release(self, name: str) -> None:
        """Close model ``name`` and leave it out from now on (its seconds and counts stay)."""
        annotator = self._annotators.pop(name, None)
        if annotator is not None:
            annotator.close()
            if annotator.remote is not None:
                annotator.remote.close()
        self.models = [m for m in self.models if m.name != name]
        self.names = [m.name for m in self.models]
        self.released.append(name)
        if name in self._recent:
            self._recent.remove(name)

    def __enter__(self) -> LLMPanel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _annotator(self, model: PanelModel) -> LLMAnnotator:
        if model.name not in self._annotators:
            annotator = LLMAnnotator(model.path, model.prompt, model.llm or self.llm, self.store)
            annotator.before_load = lambda: self._make_room(model.name)
            if self.remote is not None:
                annotator.remote = self.remote(model)
            self._annotators[model.name] = annotator
        if self.remote is not None:  # on a cluster one model's pool at a time: each may take every slot
            for name, other in self._annotators.items():
                if name != model.name and other.remote is not None:
                    other.remote.close()
        if model.name in self._recent:
            self._recent.remove(model.name)
        self._recent.append(model.name)
        return self._annotators[model.name]

    def _make_room(self, name: str) -> None:
        """Before ``name`` loads: release the least recently used models beyond ``max_resident``."""
        self.loads[name] += 1
        if self.max_resident is None:
            return
        loaded = [n for n in self._recent if n != name and self._annotators[n].engine is not None]
        while len(loaded) >= self.max_resident:
            self._annotators[loaded.pop(0)].close()

    def model_signals(self, model: PanelModel, rows: np.ndarray,
                      plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One model's label probabilities (renormalised over the K labels), consistency and raw
        label mass (each label's sequence probability, the paper's z of Eq. 5), each
        (len(rows), K), under ``plan``."""
        k = len(model.prompt.labels)
        scores, c, mass = np.zeros((len(rows), k)), np.zeros((len(rows), k)), np.zeros((len(rows), k))
        annotator = self._annotator(model)
        done = 0
        for prompt, positions in plan.split(rows):
            report = (lambda d, t, b=done: self.progress(f"llm {model.name}", b + d, len(rows))) if self.progress else None
            annotator.use_prompt(prompt)
            before, started = annotator.computed, time.perf_counter()
            s = annotator.annotate([self.texts[i] for i in rows[positions]], report)
            self.seconds[model.name] += time.perf_counter() - started
            self.computed[model.name] += annotator.computed - before
            scores[positions], c[positions], mass[positions] = s.scores, s.consistency, np.exp(s.label_logprob)
            self.truncated.update(int(r) for r, cut in zip(rows[positions], s.truncated) if cut)
            self.chunked.update(int(r) for r, n in zip(rows[positions], s.chunks) if n > 1)
            done += len(positions)
        return scores, c, mass

    def _fits(self, model: PanelModel, plan: Plan) -> bool:
        annotator = self._annotator(model)
        return all(annotator.prefix_fits(prompt) for prompt in plan.prompts)

    def _in_turn(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every model's :meth:`model_signals` of ``rows``, in panel order; the models already
        loaded run first (the most recently used first), so models taking turns reload one model
        fewer per call (a model's numbers never depend on the order)."""
        loaded = [n for n in reversed(self._recent) if self._annotators[n].engine is not None]
        order = sorted(range(len(self.models)),
                       key=lambda i: loaded.index(self.models[i].name) if self.models[i].name in loaded else len(loaded) + i)
        each: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for i in order:
            each[i] = self.model_signals(self.models[i], rows, self.plans[self.models[i].name])
        return [each[i] for i in range(len(self.models))]

    def signals(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and consistency (len(rows), N, K) of ``rows``, each model under its plan."""
        rows = np.asarray(rows, np.int64)
        if not self.models:
            return np.zeros((len(rows), 0, self.n_labels)), np.zeros((len(rows), 0, self.n_labels))
        each = self._in_turn(rows)
        return np.stack([scores for scores, _, _ in each], axis=1), np.stack([c for _, c, _ in each], axis=1)

    def label_mass(self, rows: np.ndarray) -> np.ndarray:
        """Raw label mass (len(rows), N, K) of ``rows``, each model under its plan (from the store
        for rows already annotated)."""
        if not self.models:
            return np.zeros((len(rows), 0, self.n_labels))
        return np.stack([mass for _, _, mass in self._in_turn(np.asarray(rows, np.int64))], axis=1)

    def _first_look(self, model: PanelModel, shots: int, x: np.ndarray, seed_rows: np.ndarray, y: np.ndarray,
                    words: int, keep: Callable[..., bool]) -> bool:
        """The value check on every seed row under the cheapest prompt (``shots``), before the
        choice of demonstrations spends more on the seed rows: False releases the model."""
        plan = PromptPlan.with_demonstrations(model.prompt, shots, self.texts, x, seed_rows, y, words)
        if keep(model.name, self.model_signals(model, seed_rows, plan)[0], first_look=True):
            return True
        self.release(model.name)
        return False

    def choose_shots(self, candidates: Sequence[int], x: np.ndarray, seed_rows: np.ndarray, y: np.ndarray,
                     words: int, choice_rows: np.ndarray | None = None, fallback: int = 0,
                     ahead: np.ndarray | None = None,
                     keep: Callable[..., bool] | None = None, retrieved: int = 0) -> dict[str, ShotChoice]:
        """Set each model's plan to its best number of shots (see the module docstring).

        x (n, D): embeddings (the demonstrations cover each label on them); seed_rows (m,) and
        y (m,): the seed rows and their class indices; the choice is scored on ``choice_rows``
        (default: all seed rows). No ``candidates``: no choice, base models (no chat format)
        take ``fallback`` shots and chat models none. Of several candidates, or of the fallback,
        a number of shots whose demonstrations do not fit the model's context is passed over
        (zero-shot where none fits); one candidate (``--shots N``) is taken as asked. ``ahead``
        (r,): rows each model annotates under its chosen plan right after its choice, while it is
        loaded (annotating ahead: one load per model). ``keep(name, scores, first_look=False)``:
        the value check, called with each model's scores (m, K) of the seed rows under its cheapest
        prompt first (``first_look=True``: before the choice of demonstrations reads the seed rows
        again) and then under its chosen plan; False releases the model (:meth:`release`) before
        it annotates anything else. ``retrieved`` > 0: with several candidates, each model also
        tries ``retrieved`` demonstrations per label retrieved per text (:class:`RetrievedPlan`),
        taken only where it beats the best shared plan on the choice rows by more than a standard
        error (:func:`clearly_better`): a prefix per text costs more than a shared one.
        """
        label_of = dict(zip(seed_rows.tolist(), y.tolist()))
        rows = seed_rows if choice_rows is None else np.asarray(choice_rows, np.int64)
        truth = np.array([label_of[int(r)] for r in rows], np.int64)
        choices = {}
        for model in list(self.models):
            options = sorted(set(candidates)) or [fallback if model.prompt.chat_format == "none" else 0]
            if keep is not None and len(options) > 1 and not self._first_look(model, options[0], x, seed_rows, y, words, keep):
                choices[model.name] = ShotChoice({}, options[0])
                continue
            plans: list[Plan] = [PromptPlan.with_demonstrations(model.prompt, shots, self.texts, x, seed_rows, y, words)
                                 for shots in options]
            if retrieved and len(options) > 1:
                plans.append(RetrievedPlan(model.prompt, retrieved, self.texts, x, seed_rows, y, words))
            plan, accuracy = self._best_plan(model, plans, rows, truth, forced=len(candidates) == 1)
            self.plans[model.name] = plan
            choices[model.name] = ShotChoice(accuracy, plan.name)
            if keep is not None and not keep(model.name, self.model_signals(model, seed_rows, plan)[0]):
                self.release(model.name)
                continue
            if ahead is not None and len(ahead):
                self.model_signals(model, np.union1d(seed_rows, ahead), plan)
        return choices

    def _best_plan(self, model: PanelModel, plans: list[Plan], rows: np.ndarray, truth: np.ndarray,
                   forced: bool) -> tuple[Plan, dict[int | str, float]]:
        """The plan that scores ``rows`` best (accuracy, then log-likelihood of ``truth``; the
        first of equals), and each plan's accuracy; a retrieved plan must be
        :func:`clearly_better` than the best shared one. A plan whose prefix does not fit the
        model's context is passed over (unless ``forced``); none fits: zero-shot."""
        best, accuracy = None, {}
        for plan in plans:
            if plan.shots and not forced and not self._fits(model, plan):
                continue  # demonstrations too long for the model's context: not a candidate
            if len(plans) == 1:
                return plan, accuracy
            scores, _, _ = self.model_signals(model, rows, plan)
            right = scores.argmax(axis=1) == truth
            score = (float(np.mean(right)), -float(row_log_losses(scores, truth, 1e-9).mean()))
            accuracy[plan.name] = round(score[0], 4)
            if best is None or (score > best[0] and (isinstance(plan, PromptPlan) or clearly_better(right, best[2]))):
                best = (score, plan, right)
        return (PromptPlan.zero_shot(model.prompt) if best is None else best[1]), accuracy


def clearly_better(right: np.ndarray, other: np.ndarray) -> bool:
    """Whether rows right under one plan (m,) beat rows right under another (m,) by more than
    one standard error of the paired difference."""
    diff = right.astype(np.float64) - other.astype(np.float64)
    if len(diff) < 2:
        return False
    return bool(diff.mean() > diff.std(ddof=1) / np.sqrt(len(diff)))
