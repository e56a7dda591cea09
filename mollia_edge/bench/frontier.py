"""The accuracy-per-GB frontier: which quantization level per model gives the best mixture
accuracy for the memory it takes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Levels = dict[str, str]
"""Model name -> quantization level."""


@dataclass(frozen=True)
class Combination:
    levels: Levels
    memory_gib: float
    accuracy: float


def _memory(levels: Levels, memory_gib: Mapping[str, Mapping[str, float]]) -> float:
    return sum(memory_gib[model][quant] for model, quant in levels.items())


def _exhaustive(memory_gib: Mapping[str, Mapping[str, float]]) -> list[Levels]:
    models = list(memory_gib)
    return [dict(zip(models, choice)) for choice in itertools.product(*(memory_gib[m] for m in models))]


def _greedy_path(
    memory_gib: Mapping[str, Mapping[str, float]], accuracy: Callable[[Levels], float]
) -> list[Levels]:
    """From every model at its smallest level, repeatedly make the one upgrade (one model one
    level up) with the best accuracy gained per GiB added, until every model is at its largest."""
    ladders = {m: sorted(options, key=options.__getitem__) for m, options in memory_gib.items()}
    current = {m: ladder[0] for m, ladder in ladders.items()}
    path = [dict(current)]
    while True:
        upgrades = []
        for model, ladder in ladders.items():
            position = ladder.index(current[model])
            if position + 1 < len(ladder):
                upgrades.append({**current, model: ladder[position + 1]})
        if not upgrades:
            return path
        base_acc, base_mem = accuracy(current), _memory(current, memory_gib)
        current = max(
            upgrades,
            key=lambda levels: (accuracy(levels) - base_acc) / max(_memory(levels, memory_gib) - base_mem, 1e-9),
        )
        path.append(dict(current))


def evaluate_combinations(
    memory_gib: Mapping[str, Mapping[str, float]], accuracy: Callable[[Levels], float], max_combinations: int
) -> list[Combination]:
    """Mixture accuracy for level combinations: all of them when there are at most
    ``max_combinations``, else those on a greedy upgrade path. Sorted by memory."""
    count = 1
    for options in memory_gib.values():
        count *= len(options)
    candidates = _exhaustive(memory_gib) if count <= max_combinations else _greedy_path(memory_gib, accuracy)
    found = [Combination(levels, _memory(levels, memory_gib), accuracy(levels)) for levels in candidates]
    return sorted(found, key=lambda c: (c.memory_gib, -c.accuracy))


def pareto_front(combinations: list[Combination]) -> list[Combination]:
    """Combinations no other beats on accuracy with no more memory, by increasing memory."""
    front: list[Combination] = []
    for combination in sorted(combinations, key=lambda c: (c.memory_gib, -c.accuracy)):
        if not front or combination.accuracy > front[-1].accuracy:
            front.append(combination)
    return front


def best_under_budget(combinations: list[Combination], budget_gib: float) -> Combination | None:
    """The most accurate combination that fits in ``budget_gib`` (the smaller one on ties)."""
    fitting = [c for c in combinations if c.memory_gib <= budget_gib]
    return max(fitting, key=lambda c: (c.accuracy, -c.memory_gib)) if fitting else None
