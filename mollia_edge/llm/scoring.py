"""Pure numpy maths on full-vocabulary logits and on sampled answers.

The sampler modelled here is the one the engine runs: logits divided by the temperature,
then top-p (nucleus) truncation of the tempered distribution — the smallest set of most
likely tokens whose probability reaches ``top_p`` — renormalised, then one draw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Probability above which tokens are candidates for the nucleus before a full sort is needed.
_NUCLEUS_CANDIDATE_FLOOR = 1e-5


@dataclass(frozen=True)
class NextTokenStats:
    """What one logits row says about a few tokens of interest.

    logprob: shape (m,), log-softmax at temperature 1 of each token of interest.
    sample_prob: shape (m,), probability that the temperature/top-p sampler emits each token.
    stop_prob: probability that the sampler emits any stop token.
    """

    logprob: np.ndarray
    sample_prob: np.ndarray
    stop_prob: float


def _logsumexp(x: np.ndarray) -> float:
    peak = float(x.max())
    return peak + float(np.log(np.exp(x - peak).sum(dtype=np.float64)))


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The tokens the sampler can emit and their probabilities.

    logits: shape (V,). Returns (token ids, probabilities summing to 1), most likely first.
    """
    tempered = logits / np.float32(temperature)
    weights = np.exp(tempered - tempered.max())
    total = float(weights.sum(dtype=np.float64))
    candidates = np.flatnonzero(weights >= _NUCLEUS_CANDIDATE_FLOOR * total)
    if top_p >= 1 or weights[candidates].sum(dtype=np.float64) < top_p * total:
        candidates = np.arange(weights.size)
    candidate_weights = weights[candidates].astype(np.float64)
    order = np.argsort(-candidate_weights, kind="stable")
    sorted_weights = candidate_weights[order]
    if top_p >= 1:  # no truncation (llama.cpp skips the step)
        cut = sorted_weights.size
    else:
        cut = int(np.searchsorted(np.cumsum(sorted_weights), top_p * total)) + 1
    kept_weights = sorted_weights[:cut]
    return candidates[order[:cut]], kept_weights / kept_weights.sum()


def next_token_stats(
    logits: np.ndarray,
    tokens: Sequence[int],
    stop_mask: np.ndarray | None,
    temperature: float,
    top_p: float,
) -> NextTokenStats:
    """Log-probabilities and sampling probabilities of ``tokens`` at one position.

    logits: shape (V,) raw logits; stop_mask: shape (V,) bool, or None when the stop
    probability is not wanted (it is then 0).
    """
    token_ids = np.asarray(tokens, dtype=np.int64)
    logprob = logits[token_ids].astype(np.float64) - _logsumexp(logits)
    kept, kept_prob = nucleus(logits, temperature, top_p)
    lookup = dict(zip(kept.tolist(), kept_prob.tolist()))
    sample_prob = np.array([lookup.get(t, 0.0) for t in token_ids.tolist()], dtype=np.float64)
    stop_prob = float(kept_prob[stop_mask[kept]].sum()) if stop_mask is not None else 0.0
    return NextTokenStats(logprob=logprob, sample_prob=sample_prob, stop_prob=stop_prob)


_QUOTES = "\"'`*“”‘’«»"
_ARTICLE = re.compile(r"^(a|an|the)\s+")


def normalise_answer(answer: str) -> str:
    """Lower-case; strip surrounding whitespace, quotes, markup and trailing punctuation,
    a leading ``label:``-style prefix and a leading article."""
    text = answer.strip().lower()
    text = re.sub(r"^(label|category|answer|output)\s*:\s*", "", text)
    text = text.strip(_QUOTES + " ").rstrip(".,;:!?").strip(_QUOTES + " ")
    text = _ARTICLE.sub("", text)
    return " ".join(text.split())


def answer_variants(label: str) -> list[str]:
    """The spellings of ``label`` a model commonly writes that :func:`normalise_answer` takes
    for it: as given, lower case, capitalised and upper case, each bare or with a full stop;
    ``label`` first, no two alike. Exact consistency sums their probabilities, so it counts the
    answers sampled consistency counts (quotes, prefixes and articles aside: rare, and each one
    more branch per label)."""
    cases = [label, label.lower(), label[:1].upper() + label[1:], label.upper()]
    out: list[str] = []
    for text in (c + end for c in cases for end in ("", ".")):
        if text not in out and normalise_answer(text) == normalise_answer(label):
            out.append(text)
    return out


def answer_shares(answers: Sequence[str], labels: Sequence[str],
                  index: dict[str, int] | None = None) -> tuple[np.ndarray, float]:
    """Share of answers equal to each label after normalisation, and the invalid share.

    ``index``: normalised answer -> label index (labels and aliases:
    :meth:`~mollia_edge.llm.prompts.PromptSpec.answer_index`); default: the labels only.
    Returns (shares of shape (K,), invalid share); ``shares.sum() + invalid == 1``.
    """
    if index is None:
        index = {normalise_answer(label): k for k, label in enumerate(labels)}
    shares = np.zeros(len(labels), dtype=np.float64)
    for answer in answers:
        k = index.get(normalise_answer(answer))
        if k is not None:
            shares[k] += 1
    total = max(len(answers), 1)
    return shares / total, 1.0 - shares.sum() / total
