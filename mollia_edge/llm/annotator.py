"""Texts → LLM signals for one model, every result cached in the session store as it is made."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from pathlib import Path

import numpy as np

from ..config import ANSWER_SPELLINGS, LLMConfig, fit_sequences
from ..chunks import pack_chunks
from ..data import text_sha256
from ..errors import ConfigError, ModelError
from ..store import Store
from .catalog import file_sha256
from .engine import ENGINE_VERSION, JobResult, LlamaEngine, PrefixStates, ScoringJob
from .prompts import PromptSpec
from .scoring import answer_shares, answer_variants, normalise_answer
from .signals import NO_LABEL, AnnotationSignals, TextSignals, combine_chunks

Progress = Callable[[int, int], None]
"""Called with (texts done, texts to do) as work advances."""

_CUT_MARK = "…"


class LLMAnnotator:
    """One GGUF model answering the classification prompt for many texts.

    The model is loaded only when some text is not in the cache yet.
    """

    def __init__(
        self,
        model_path: str | Path,
        prompt: PromptSpec,
        llm: LLMConfig | None = None,
        store: Store | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.prompt = prompt
        self.llm = fit_sequences(llm or LLMConfig(), len(prompt.labels), _alias_count(prompt))
        self.store = store
        self.engine: LlamaEngine | None = None
        self.prefix_states = PrefixStates()
        """Evaluated prefixes' KV states, kept when the model is released (models taking turns)."""
        self._prompt_applied = False
        self.before_load: Callable[[], None] | None = None
        """Called before the model is loaded (the panel makes room for it there)."""
        self.remote: Any = None
        """A pool of workers elsewhere that evaluates the texts instead of a local engine
        (:class:`mollia_edge.llm.cluster.RayModel`); this annotator still stores every output."""
        self.computed = 0
        """Texts evaluated by the model (not served from the cache) since construction."""
        self.model_sha256 = file_sha256(self.model_path, store)
        self.prompt_key = self._prompt_key()

    def use_prompt(self, prompt: PromptSpec) -> None:
        """Answer ``prompt`` from now on (same labels; other demonstrations or instruction): the
        loaded model stays; the shared prefix is evaluated again when a text next needs the
        engine (not at all when every text is in the store)."""
        if prompt.labels != self.prompt.labels:
            raise ConfigError("use_prompt keeps the label set; make another annotator for other labels")
        if prompt == self.prompt:
            return
        self.prompt = prompt
        self.prompt_key = self._prompt_key()
        self._prompt_applied = False

    def prefix_fits(self, prompt: PromptSpec) -> bool:
        """Whether ``prompt``'s shared prefix fits the context this annotator's engine has
        (half of ``llm.n_ctx``, the rest for the texts); loads the model."""
        if self.remote is not None:
            return self.remote.prefix_fits(prompt)
        engine = self._engine()
        before, _ = prompt.split()
        return len(engine.tokenize(before, add_bos=True, special=True)) < engine.n_ctx // 2

    def _prompt_key(self) -> str:
        llm = self.llm
        settings = {
            "prompt": self.prompt.key(),
            "engine": ENGINE_VERSION,
            "flash_attn": llm.flash_attn,
            "max_text_tokens": llm.max_text_tokens,
            "consistency": llm.consistency,
            "temperature": llm.temperature,
            "top_p": llm.top_p,
        }
        if llm.chunk_combine != "mean":  # keys of outputs stored before chunking stay valid
            settings["chunk_combine"] = llm.chunk_combine
        if llm.consistency == "sampled":
            settings |= {"samples": llm.samples, "max_new_tokens": llm.max_new_tokens, "seed": llm.seed}
        elif llm.answer_spellings:
            settings["answers"] = "variants-1"  # exact consistency sums each label's spellings
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> LLMAnnotator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def annotate(self, texts: Sequence[str], progress: Progress | None = None) -> AnnotationSignals:
        """Signals for every text, in input order; cached texts are not evaluated again."""
        hashes = [text_sha256(t) for t in texts]
        found = self.store.llm_outputs(self.model_sha256, self.prompt_key, hashes) if self.store else {}
        found = {h: s for h, s in found.items() if self._reads_as_now(s)}
        todo = {h: t for h, t in zip(hashes, texts) if h not in found}
        done = len(set(hashes)) - len(todo)
        if progress:
            progress(done, done + len(todo))
        pending = list(todo.items())
        start = 0
        for signals in self._evaluate_groups([t for _, t in pending], [h for h, _ in pending]):
            fresh = list(zip((h for h, _ in pending[start : start + len(signals)]), signals))
            if self.store:  # each group as it ends: a kill loses one group's work at most
                self.store.put_llm_outputs(self.model_sha256, self.prompt_key, fresh)
            found.update(fresh)
            start += len(signals)
            self.computed += len(signals)
            done += len(signals)
            if progress:
                progress(done, done + len(pending) - start)
        return AnnotationSignals.stack(self.prompt.labels, [found[h] for h in hashes])

    # -- evaluation --------------------------------------------------------------------------
    def _engine(self) -> LlamaEngine:
        if self.engine is None:
            if self.before_load is not None:
                self.before_load()
            self.engine = LlamaEngine.from_config(self.model_path, self.llm)
            self._prompt_applied = False
        if not self._prompt_applied:
            self._apply_prompt()
        return self.engine

    def _apply_prompt(self) -> None:
        """Evaluate the prompt's shared prefix and tokenize the label answers."""
        assert self.engine is not None
        self._before, self._after = self.prompt.split()
        self.engine.set_prefix(self.engine.tokenize(self._before, add_bos=True, special=True), self.prefix_states)
        self._prompt_applied = True
        self._continuations = [
            self.engine.tokenize_continuation(self.prompt.answer(label)) for label in self.prompt.labels
        ]
        if any(not tokens for tokens in self._continuations):
            raise ConfigError("a label tokenizes to nothing with this model")
        self._variant_of: list[int] = []  # exact consistency: each extra spelling's label (aliases too)
        self._variants: list[list[int]] = []
        if self.llm.consistency != "exact":
            return
        spellings = (self.llm.answer_spellings
                     and self.llm.n_seq_max > len(self.prompt.labels) * ANSWER_SPELLINGS + _alias_count(self.prompt))
        for k, label in enumerate(self.prompt.labels):
            aliases = self.prompt.aliases[k] if self.prompt.aliases else ()
            for text in (answer_variants(label)[1:] if spellings else []) + list(aliases):
                tokens = self.engine.tokenize_continuation(self.prompt.answer(text))
                if tokens and tokens not in self._continuations and tokens not in self._variants:
                    self._variants.append(tokens)
                    self._variant_of.append(k)

    def prompt_tokens(self, text: str) -> tuple[list[int], bool]:
        """The prompt's tokens for ``text`` and whether the text was cut to ``max_text_tokens``.

        Control-token text inside the text (``<|im_end|>``...) stays plain text.
        """
        engine = self._engine()
        plain = engine.tokenize(text)
        cut = len(plain) > self.llm.max_text_tokens
        if cut:
            text = engine.detokenize(plain[: self.llm.max_text_tokens])
        if cut or engine.tokenize(text, special=True) != plain:
            return (
                engine.tokenize(self._before, add_bos=True, special=True)
                + engine.tokenize_continuation(" " + text)
                + engine.tokenize(self._after, special=True)
            ), cut
        return engine.tokenize(f"{self._before} {text}{self._after}", add_bos=True, special=True), cut

    @property
    def continuations(self) -> list[list[int]]:
        """Token ids of each label's answer, shape K lists."""
        self._engine()
        return self._continuations

    def _reads_as_now(self, stored: TextSignals) -> bool:
        """Whether a stored output was read as this annotator reads the text now: a text that
        was cut is read again in chunks, and a chunked one again when texts are cut."""
        if self.llm.long_texts == "chunk":
            return not (stored.truncated and stored.chunks == 1)
        return stored.chunks == 1

    def _pieces(self, text: str) -> tuple[list[str], bool]:
        """The parts of ``text`` the model reads, each within ``max_text_tokens`` once
        :meth:`prompt_tokens` has its way (the text itself unless it is chunked), and whether
        some of it is cut."""
        engine = self._engine()
        budget = self.llm.max_text_tokens
        if self.llm.long_texts == "truncate" or len(engine.tokenize(text)) <= budget:
            return [text], False
        chunks = pack_chunks(text, lambda piece: len(engine.tokenize(piece)), budget, most=self.llm.max_chunks)
        return chunks[: self.llm.max_chunks], len(chunks) > self.llm.max_chunks

    def _jobs(self, texts: Sequence[str], hashes: Sequence[str]) -> tuple[list[ScoringJob], list[bool], list[int]]:
        """The engine's jobs, one per chunk of each text (sampling seeded by the text's hash and
        the chunk's place), whether each text was cut, and its number of jobs."""
        sampled = self.llm.consistency == "sampled"
        jobs, cuts, counts = [], [], []
        for text, h in zip(texts, hashes):
            pieces, cut = self._pieces(text)
            for i, piece in enumerate(pieces):
                tokens, piece_cut = self.prompt_tokens(piece)
                cut = cut or piece_cut
                jobs.append(ScoringJob(
                    prompt_tokens=tokens,
                    continuations=self._continuations + self._variants,
                    n_samples=self.llm.samples if sampled else 0,
                    seed=_sampling_seed(self.llm.seed, h if i == 0 else f"{h}:{i}"),
                    want_stop=not sampled,
                ))
            cuts.append(cut)
            counts.append(len(pieces))
        return jobs, cuts, counts

    def _max_new_tokens(self) -> int:
        return max(self.llm.max_new_tokens, max(len(c) for c in self._continuations + self._variants) + 1)

    def group_sizes(self, texts: Sequence[str], hashes: Sequence[str]) -> list[int]:
        """How ``texts`` are cut into groups that share batches (sizes in texts, in order; a
        long text whose chunks fill several groups counts in the last): a function of the
        texts, the model and the prompt (:meth:`LlamaEngine.group_sizes`)."""
        if not texts:
            return []
        engine = self._engine()
        jobs, _, counts = self._jobs(texts, hashes)
        ends = np.cumsum(counts)  # each text's last job, + 1
        sizes, done = [], 0
        for end in np.cumsum(engine.group_sizes(jobs, self._max_new_tokens(), counts)):
            finished = int(np.searchsorted(ends, end, side="right"))
            if finished > done:
                sizes.append(finished - done)
                done = finished
        return sizes

    def _evaluate_groups(self, texts: Sequence[str], hashes: Sequence[str]) -> Iterator[list[TextSignals]]:
        """Signals of ``texts``, in order, one list per group of texts that shared the batches
        (:meth:`LlamaEngine.run_groups`: the grouping is reproducible), or per run of whole
        groups when a :attr:`remote` pool evaluates them."""
        if not texts:
            return
        if self.remote is not None:
            yield from self.remote.evaluate_groups(self.prompt, texts, hashes)
            return
        engine = self._engine()
        jobs, cuts, counts = self._jobs(texts, hashes)
        groups = engine.run_groups(jobs, temperature=self.llm.temperature, top_p=self.llm.top_p,
                                   max_new_tokens=self._max_new_tokens(), units=counts)
        waiting: list[JobResult] = []  # results of the texts not finished yet, in order
        text = 0
        for results in groups:
            waiting.extend(results)
            finished = []
            while text < len(counts) and len(waiting) >= counts[text]:
                parts = [self._signals(r, cuts[text]) for r in waiting[: counts[text]]]
                finished.append(combine_chunks(parts, self.llm.chunk_combine))
                del waiting[: counts[text]]
                text += 1
            yield finished

    def evaluate(self, texts: Sequence[str], hashes: Sequence[str]) -> list[TextSignals]:
        """Signals of ``texts`` (a run of whole groups), in order, not stored (a remote worker's call)."""
        return [s for group in self._evaluate_groups(texts, hashes) for s in group]

    def _signals(self, result: JobResult, cut: bool) -> TextSignals:
        if not (np.all(np.isfinite(result.label_logprob)) and np.all(np.isfinite(result.label_sample_prob))):
            raise ModelError(
                f"model file {self.model_path} gave non-finite log-probabilities: the file is corrupt; copy it again"
            )
        k = len(self.prompt.labels)
        if self.llm.consistency == "exact":  # each label's canonical answer and its other spellings
            consistency = result.label_sample_prob[:k].copy()
            np.add.at(consistency, np.asarray(self._variant_of, np.int64), result.label_sample_prob[k:])
            return TextSignals(
                label_logprob=result.label_logprob[:k],
                consistency=consistency,
                invalid=max(0.0, 1.0 - float(consistency.sum())),
                truncated=cut,
            )
        answers = tuple(self._answer_text(tokens) for tokens in result.samples)
        index = self.prompt.answer_index()
        shares, invalid = answer_shares(answers, self.prompt.labels, index)
        # what consistency needs, never the raw answer (a model may repeat the text): the label, or "" for none
        kept = tuple(self.prompt.labels[j] if (j := index.get(normalise_answer(a))) is not None else NO_LABEL
                     for a in answers)
        return TextSignals(
            label_logprob=result.label_logprob[:k],
            consistency=shares,
            invalid=invalid,
            answers=kept,
            truncated=cut,
        )

    def _answer_text(self, tokens: list[int | None]) -> str:
        """A sampled answer, normalised; one that never stopped is marked so it matches no label."""
        assert self.engine is not None
        unfinished = bool(tokens) and tokens[-1] is None
        text = self.engine.detokenize([t for t in tokens if t is not None]).split("\n")[0]
        return normalise_answer(text) + (_CUT_MARK if unfinished else "")


def _alias_count(prompt: PromptSpec) -> int:
    return sum(len(names) for names in prompt.aliases)


def _sampling_seed(seed: int, text_hash: str) -> int:
    """A per-text seed: a text's samples do not depend on which texts share its batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{text_hash}".encode()).digest()[:4], "little")

