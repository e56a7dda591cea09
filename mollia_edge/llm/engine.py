"""The only module that touches llama.cpp (through llama-cpp-python's low-level API).

One :class:`LlamaEngine` holds a model and a context whose KV cache is shared by many
sequences. The prompt prefix common to all texts lives in sequence 0 and is evaluated once;
each text is evaluated once in branch sequences that share the prefix cells; the K label
continuations and the T sampled answers then run as parallel sequences in shared batches.
Nothing outside this module sees ctypes.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from ..config import LLMConfig
from ..cpus import usable_cpus
from ..errors import ConfigError, ModelError
from .scoring import next_token_stats

ENGINE_VERSION = f"llama-cpp-python {llama_cpp.__version__}"
"""Part of every cache key: another llama.cpp may give other numbers."""

_log_lines: deque[str] = deque(maxlen=50)
_ANSWER_END_MASKS: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
"""(stop, halt) masks per model file (path, size, mtime): reloads of a model reuse them."""


class PrefixStates:
    """KV states of evaluated prompt prefixes (sequence 0), kept across engines of one model.

    A model that takes turns in memory is loaded again for every round; restoring its
    demonstrations' prefix costs a copy instead of an evaluation. The ``keep`` most recently
    used prefixes are kept (a few MB each for the starter models).
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.restored = 0
        """How many times a saved state was handed out."""

    def get(self, tokens: Sequence[int]) -> bytes | None:
        state = self._states.get(tuple(tokens))
        if state is not None:
            self._states.move_to_end(tuple(tokens))
            self.restored += 1
        return state

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        self._states[tuple(tokens)] = state
        self._states.move_to_end(tuple(tokens))
        while len(self._states) > self.keep:
            self._states.popitem(last=False)


@llama_cpp.llama_log_callback
def _keep_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs go to a small buffer (quoted in errors), never to the terminal."""
    _log_lines.append(text.decode("utf-8", errors="replace").rstrip())


llama_cpp.llama_log_set(_keep_log, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()


_HAS_AMX = b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()
"""llama.cpp's AMX weight buffers crash in ``ggml_backend_amx_mul_mat`` on some Sapphire-Rapids-class
CPUs (ggml-org/llama.cpp#20824; seen here with Q4_1, Q4_K_M and Q8_0 files): on CPUs with AMX the
weights stay in plain CPU buffers (``use_extra_bufts`` off, which also skips the AVX repacking)."""


def backend_info() -> str:
    """``"GPU"`` when this llama.cpp build can offload layers to a GPU, else ``"CPU"``."""
    return "GPU" if llama_cpp.llama_supports_gpu_offload() else "CPU"


def apply_chat_template(template: str) -> str | None:
    """One user message wrapped by a chat ``template`` (a GGUF file's Jinja text) as llama.cpp
    applies it, the assistant's turn opened: a format string with ``{content}`` where the
    message goes; None when llama.cpp does not know the template."""
    mark = "\ue000CONTENT\ue000"  # no NUL: llama.cpp reads C strings
    message = (llama_cpp.llama_chat_message * 1)()
    message[0].role, message[0].content = b"user", mark.encode()
    size = 4096 + len(template)
    buffer = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode("utf-8"), message, 1, True, buffer, size)
    if n < 0 or n > size:
        return None
    rendered = buffer.raw[:n].decode("utf-8", errors="replace")
    if rendered.count(mark) != 1:
        return None
    before, after = rendered.split(mark)
    return before.replace("{", "{{").replace("}", "}}") + "{content}" + after.replace("{", "{{").replace("}", "}}")


def _last_log_error() -> str:
    for line in reversed(_log_lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line.strip()
    return _log_lines[-1].strip() if _log_lines else "no detail from llama.cpp"


@dataclass(frozen=True)
class ScoringJob:
    """One text to score against K label continuations and to answer ``n_samples`` times.

    prompt_tokens: the whole prompt (prefix, text and the rest); continuations: K token
    sequences, one per label; ``want_stop``: also compute the probability that the sampler
    stops right after each continuation (exact consistency).
    """

    prompt_tokens: Sequence[int]
    continuations: Sequence[Sequence[int]]
    n_samples: int = 0
    seed: int = 0
    want_stop: bool = True


@dataclass
class JobResult:
    """label_logprob, label_sample_prob: shape (K,); samples: n_samples token lists.

    label_sample_prob[k] is the probability that the temperature/top-p sampler writes exactly
    continuation k and then stops (0 when the job did not want the stop probability).
    A sample that hit ``max_new_tokens`` without stopping ends with ``None``.
    """

    label_logprob: np.ndarray
    label_sample_prob: np.ndarray
    samples: list[list[int | None]] = field(default_factory=list)


@dataclass
class _Branch:
    """One parallel sequence of a job: a label continuation or a sampled answer."""

    seq: int
    job: int
    label: int = -1
    tokens: list[int | None] = field(default_factory=list)
    sampler: ctypes.c_void_p | None = None
    done: bool = False


class _Feeder:
    """Fills a llama_batch and decodes it when full; calls each output's handler at once,
    while its logits are still in the context."""

    def __init__(self, engine: LlamaEngine) -> None:
        self._engine = engine
        self._batch = llama_cpp.llama_batch_init(engine.n_batch, 0, engine.n_seq_max)
        self._handlers: list[tuple[int, Callable[[int], None]]] = []

    def add(
        self, token: int, pos: int, seqs: Sequence[int], on_logits: Callable[[int], None] | None
    ) -> None:
        b = self._batch
        i = b.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = len(seqs)
        for j, seq in enumerate(seqs):
            b.seq_id[i][j] = seq
        b.logits[i] = on_logits is not None
        if on_logits is not None:
            self._handlers.append((i, on_logits))
        b.n_tokens = i + 1
        if b.n_tokens == self._engine.n_batch:
            self.flush()

    def flush(self) -> None:
        if self._batch.n_tokens == 0:
            return
        status = llama_cpp.llama_decode(self._engine._ctx, self._batch)
        if status != 0:
            raise ModelError(
                f"llama.cpp could not evaluate a batch (status {status}: {_last_log_error()}); "
                "raise llm.n_ctx or lower llm.n_seq_max"
            )
        handlers, self._handlers = self._handlers, []
        self._batch.n_tokens = 0
        for index, handler in handlers:
            handler(index)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)


class LlamaEngine:
    """A GGUF model and a multi-sequence context, deterministic for given settings."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 8192,
        n_batch: int = 512,
        n_seq_max: int = 64,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        flash_attn: bool = True,
    ) -> None:
        if n_seq_max > n_batch:  # llama.cpp aborts the process otherwise
            raise ConfigError(f"llm.n_seq_max ({n_seq_max}) must not exceed llm.n_batch ({n_batch})")
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.path = path
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.n_ctx = n_ctx
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 2**31 - 1
        model_params.use_extra_bufts = not _HAS_AMX
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise ModelError(f"cannot load model {path}: {_last_log_error()}")
        threads = n_threads or usable_cpus()
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        ctx_params.n_seq_max = n_seq_max
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx_params.kv_unified = True  # branch sequences share the prefix's KV cells
        ctx_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ModelError(f"cannot create a llama.cpp context for {path}: {_last_log_error()}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._prefix: list[int] = []
        self.group_cells = _group_cells(self._model, n_batch, n_gpu_layers)
        stat = path.stat()
        masks_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if masks_key not in _ANSWER_END_MASKS:  # a pass over the vocabulary: once per model file
            _ANSWER_END_MASKS[masks_key] = self._answer_end_masks()
        self._stop_mask, self._halt_mask = _ANSWER_END_MASKS[masks_key]
        self._space_prefixed = self.token_piece(self.tokenize("a")[0]).startswith(" ")

    @classmethod
    def from_config(cls, model_path: str | Path, llm: LLMConfig) -> LlamaEngine:
        """An engine with the context settings of ``llm``."""
        return cls(
            model_path,
            n_ctx=llm.n_ctx,
            n_batch=llm.n_batch,
            n_seq_max=llm.n_seq_max,
            n_threads=llm.n_threads,
            n_gpu_layers=llm.n_gpu_layers,
            flash_attn=llm.flash_attn,
        )

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of ``text``; ``special`` parses control-token text such as ``<|im_end|>``."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, special)
        if n < 0:
            size = -n
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, special)
        return list(buffer[:n])

    def token_bytes(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
        return buffer.raw[:n]

    def token_piece(self, token: int) -> str:
        return self.token_bytes(token).decode("utf-8", errors="replace")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def tokenize_continuation(self, text: str) -> list[int]:
        """Tokens of ``text`` written right after a prompt, as the model itself would write it
        (tokenizers that put a space before every piece get the text without its own)."""
        if self._space_prefixed and text.startswith(" "):
            text = text[1:]
        return self.tokenize(text)

    def _answer_end_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(stop, halt) masks over the vocabulary, shape (V,) bool.

        An answer ends with an end-of-generation token or a token starting a new line (stop);
        generation also halts on any token containing a newline (the answer is its first line).
        """
        stop = np.zeros(self.n_vocab, dtype=bool)
        halt = np.zeros(self.n_vocab, dtype=bool)
        buffer = ctypes.create_string_buffer(256)
        to_piece, is_eog = llama_cpp.llama_token_to_piece, llama_cpp.llama_vocab_is_eog
        for token in range(self.n_vocab):
            n = to_piece(self._vocab, token, buffer, 256, 0, False)
            if n == 0:  # control tokens have no text: only end-of-generation ones matter
                stop[token] = halt[token] = is_eog(self._vocab, token)
                continue
            piece = buffer.raw[:n] if n > 0 else self.token_bytes(token)
            stop[token] = piece.lstrip(b" \t").startswith((b"\n", b"\r"))
            halt[token] = b"\n" in piece or b"\r" in piece
        for token in (llama_cpp.llama_vocab_eos(self._vocab), llama_cpp.llama_vocab_eot(self._vocab)):
            if 0 <= token < self.n_vocab:
                stop[token] = halt[token] = True
        return stop, halt

    # -- evaluation --------------------------------------------------------------------------
    @property
    def prefix_length(self) -> int:
        """Tokens of the shared prefix held in the KV cache."""
        return len(self._prefix)

    def set_prefix(self, tokens: Sequence[int], saved: PrefixStates | None = None) -> None:
        """Evaluate the shared prompt prefix into sequence 0 (nothing to do if unchanged).

        With ``saved``, a prefix evaluated before (by an earlier engine on the same model file
        and settings: models taking turns) is restored from its KV state instead, and a newly
        evaluated one is saved there; restored cells are the same bytes, so no number changes.
        """
        tokens = list(tokens)
        if tokens == self._prefix:
            return
        llama_cpp.llama_memory_clear(self._memory, True)
        self._prefix = []
        if len(tokens) >= self.n_ctx // 2:
            raise ConfigError(
                f"the prompt prefix has {len(tokens)} tokens, too many for llm.n_ctx={self.n_ctx}; "
                "use fewer demonstrations or a larger n_ctx"
            )
        state = saved.get(tokens) if saved is not None else None
        if state is None or not self._restore_sequence_0(state):
            self._evaluate_prefix(tokens)
            if saved is not None:
                saved.put(tokens, self._sequence_0_state())
        self._prefix = tokens

    def _evaluate_prefix(self, tokens: list[int]) -> None:
        feeder = _Feeder(self)
        try:
            for pos, token in enumerate(tokens):
                feeder.add(token, pos, (0,), (lambda i: None) if pos == len(tokens) - 1 else None)
            feeder.flush()
        finally:
            feeder.close()

    def _sequence_0_state(self) -> bytes:
        size = llama_cpp.llama_state_seq_get_size(self._ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(self._ctx, buffer, size, 0)
        return ctypes.string_at(buffer, n)

    def _restore_sequence_0(self, state: bytes) -> bool:
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buffer, len(state), 0) == len(state):
            return True
        llama_cpp.llama_memory_clear(self._memory, True)  # a state this context cannot take
        return False

    def _shared_length(self, prompt: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self._prefix, prompt):
            if a != b:
                break
            n += 1
        return min(n, len(prompt) - 1)

    def _cells_needed(self, job: ScoringJob, max_new_tokens: int) -> int:
        label_cells = sum(len(c) for c in job.continuations)
        return len(job.prompt_tokens) - self._shared_length(job.prompt_tokens) + label_cells + (
            job.n_samples * max_new_tokens
        )

    def _branch_count(self, job: ScoringJob) -> int:
        return max(1, len(job.continuations) + job.n_samples)

    def run(
        self,
        jobs: Sequence[ScoringJob],
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> list[JobResult]:
        """Score and sample every job, packing as many into each batch as the context holds."""
        groups = self.run_groups(jobs, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        return [result for group in groups for result in group]

    def run_groups(
        self,
        jobs: Sequence[ScoringJob],
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        units: Sequence[int] | None = None,
    ) -> Iterator[list[JobResult]]:
        """:meth:`run`, yielding the results of each group of jobs that shared the batches.

        Groups are cut greedily, in order, by a budget of KV cells (:attr:`group_cells`) and
        sequences: the same jobs always make the same groups, and the jobs after a group
        boundary make the same groups whatever came before it. A job's log-probabilities
        depend on its group mates (by float rounding, which the starter models amplify to up
        to 0.7 in a log-probability), so a caller that stores each group as it comes and
        resumes with the rest gets the numbers of an uninterrupted run. ``units``: jobs that
        belong together (a long text's chunks), kept in one group where they fit in one.
        """
        start = 0
        for size in self.group_sizes(jobs, max_new_tokens, units):
            yield self._run_group(jobs[start : start + size], temperature, top_p, max_new_tokens)
            start += size

    def group_sizes(self, jobs: Sequence[ScoringJob], max_new_tokens: int,
                    units: Sequence[int] | None = None) -> list[int]:
        """How :meth:`run_groups` cuts ``jobs`` into groups (their sizes in jobs, in order),
        greedily by the budget of KV cells and sequences, a unit of jobs (``units``: jobs per
        unit, default one each) whole where it fits one group, else alone in groups of its own;
        every job checked before any runs."""
        budget = self.n_ctx - len(self._prefix) - 8
        limits = (min(budget, self.group_cells), self.n_seq_max - 1)
        costs = [self._job_cost(job, max_new_tokens, budget) for job in jobs]
        sizes: list[int] = []
        size = cells = branches = start = 0
        for count in units if units is not None else [1] * len(jobs):
            unit = costs[start : start + count]
            need, seqs = sum(c for c, _ in unit), sum(s for _, s in unit)
            whole = need <= limits[0] and seqs <= limits[1]
            if size and (not whole or cells + need > limits[0] or branches + seqs > limits[1]):
                sizes.append(size)
                size, cells, branches = 0, 0, 0
            for job_cells, job_seqs in unit if not whole else [(need, seqs)]:
                if size and (cells + job_cells > limits[0] or branches + job_seqs > limits[1]):
                    sizes.append(size)
                    size, cells, branches = 0, 0, 0
                size += 1 if not whole else count
                cells += job_cells
                branches += job_seqs
            if not whole and size:  # the next unit starts a group of its own
                sizes.append(size)
                size, cells, branches = 0, 0, 0
            start += count
        if size:
            sizes.append(size)
        return sizes

    def _job_cost(self, job: ScoringJob, max_new_tokens: int, budget: int) -> tuple[int, int]:
        """(KV cells, sequences) one job needs; a :class:`ConfigError` when it cannot run at all."""
        need, seqs = self._cells_needed(job, max_new_tokens), self._branch_count(job)
        if need > budget or seqs > self.n_seq_max - 1:
            raise ConfigError(
                f"one text needs {need} KV cells and {seqs} sequences, more than llm.n_ctx="
                f"{self.n_ctx} / llm.n_seq_max={self.n_seq_max} allow; raise them or lower "
                "llm.max_text_tokens"
            )
        return need, seqs

    def _feed_prompts(self, feeder: _Feeder, jobs: Sequence[ScoringJob], job_seqs: list[list[int]],
                      after_prompt: Callable[[int], Callable[[int], None]]) -> None:
        """Each job's prompt after the cached prefix, into all its sequences; the last token's
        logits go to ``after_prompt(j)``."""
        for j, job in enumerate(jobs):
            shared = self._shared_length(job.prompt_tokens)
            for seq in job_seqs[j]:
                llama_cpp.llama_memory_seq_cp(self._memory, 0, seq, 0, shared)
            prompt = job.prompt_tokens
            for pos in range(shared, len(prompt)):
                last = pos == len(prompt) - 1
                feeder.add(prompt[pos], pos, job_seqs[j], after_prompt(j) if last else None)
        feeder.flush()

    def _release(self, branches: list[_Branch], job_seqs: list[list[int]]) -> None:
        """Free the branches' samplers and clear their sequences from the KV cache."""
        for branch in branches:
            if branch.sampler is not None:
                llama_cpp.llama_sampler_free(branch.sampler)
        for seqs in job_seqs:
            for seq in seqs:
                llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def _run_group(
        self, jobs: Sequence[ScoringJob], temperature: float, top_p: float, max_new_tokens: int
    ) -> list[JobResult]:
        results = [
            JobResult(
                label_logprob=np.zeros(len(job.continuations)),
                label_sample_prob=np.ones(len(job.continuations)) if job.want_stop else np.zeros(0),
            )
            for job in jobs
        ]
        branches, job_seqs = _plan_branches(jobs, temperature, top_p)
        samplers = [[b for b in branches if b.job == j and b.sampler is not None] for j in range(len(jobs))]

        def stats(logits_index: int, tokens: Sequence[int], with_stop: bool):
            row = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx, logits_index), shape=(self.n_vocab,)
            )
            return next_token_stats(row, tokens, self._stop_mask if with_stop else None, temperature, top_p)

        def credit(result: JobResult, k: int, logprob: float, sample_prob: float) -> None:
            result.label_logprob[k] += logprob
            if result.label_sample_prob.size:
                result.label_sample_prob[k] *= sample_prob

        def sample(branch: _Branch, logits_index: int) -> None:
            token = llama_cpp.llama_sampler_sample(branch.sampler, self._ctx, logits_index)
            if self._halt_mask[token]:
                branch.done = True
                return
            branch.tokens.append(token)
            if len(branch.tokens) >= max_new_tokens:
                branch.tokens.append(None)
                branch.done = True

        def after_prompt(j: int) -> Callable[[int], None]:
            job, result = jobs[j], results[j]

            def handle(index: int) -> None:
                firsts = [c[0] for c in job.continuations]
                s = stats(index, firsts, with_stop=False)
                for k in range(len(firsts)):
                    credit(result, k, s.logprob[k], s.sample_prob[k])
                for branch in samplers[j]:
                    sample(branch, index)

            return handle

        def after_label_token(branch: _Branch, position: int) -> Callable[[int], None]:
            job, result = jobs[branch.job], results[branch.job]
            continuation = job.continuations[branch.label]

            def handle(index: int) -> None:
                following = continuation[position + 1 : position + 2]
                is_last = position == len(continuation) - 1
                s = stats(index, following or [0], with_stop=is_last)
                if is_last:
                    credit(result, branch.label, 0.0, s.stop_prob)
                else:
                    credit(result, branch.label, s.logprob[0], s.sample_prob[0])

            return handle

        def after_sampled_token(branch: _Branch) -> Callable[[int], None]:
            return lambda index: sample(branch, index)

        feeder = _Feeder(self)
        try:
            self._feed_prompts(feeder, jobs, job_seqs, after_prompt)
            _feed_labels(feeder, jobs, results, branches, after_label_token)
            _feed_samples(feeder, jobs, branches, after_sampled_token)
        finally:
            feeder.close()
            self._release(branches, job_seqs)
        for result, job_samplers in zip(results, samplers):
            result.samples = [b.tokens for b in job_samplers]
        return results


def _plan_branches(jobs: Sequence[ScoringJob], temperature: float, top_p: float) -> tuple[list[_Branch], list[list[int]]]:
    """A sequence per label continuation and per sampled answer of each job (at least one per
    job), numbered from 1 (0 holds the prefix): the branches and each job's sequences."""
    branches: list[_Branch] = []
    job_seqs: list[list[int]] = []
    next_seq = 1
    for j, job in enumerate(jobs):
        seqs = []
        for k in range(len(job.continuations)):
            branches.append(_Branch(seq=next_seq, job=j, label=k))
            seqs.append(next_seq)
            next_seq += 1
        for t in range(job.n_samples):
            branches.append(_Branch(seq=next_seq, job=j, sampler=_new_sampler(temperature, top_p, job.seed, t)))
            seqs.append(next_seq)
            next_seq += 1
        if not seqs:
            seqs.append(next_seq)
            next_seq += 1
        job_seqs.append(seqs)
    return branches, job_seqs


def _feed_labels(feeder: _Feeder, jobs: Sequence[ScoringJob], results: list[JobResult], branches: list[_Branch],
                 after_label_token: Callable[[_Branch, int], Callable[[int], None]]) -> None:
    """Each label branch's continuation tokens (the last one only where its stop probability matters)."""
    for branch in branches:
        if branch.label < 0:
            continue
        job = jobs[branch.job]
        continuation = job.continuations[branch.label]
        # the stop probability matters only while the sampler can still write this label
        needs_stop = job.want_stop and results[branch.job].label_sample_prob[branch.label] > 0
        evaluated = len(continuation) if needs_stop else len(continuation) - 1
        for position in range(evaluated):
            feeder.add(continuation[position], len(job.prompt_tokens) + position, (branch.seq,),
                       after_label_token(branch, position))


def _feed_samples(feeder: _Feeder, jobs: Sequence[ScoringJob], branches: list[_Branch],
                  after_sampled_token: Callable[[_Branch], Callable[[int], None]]) -> None:
    """Decode the sampled answers one token per pass until every sampler is done."""
    while True:
        pending = [b for b in branches if b.sampler is not None and not b.done]
        for branch in pending:
            position = len(jobs[branch.job].prompt_tokens) + len(branch.tokens) - 1
            feeder.add(branch.tokens[-1], position, (branch.seq,), after_sampled_token(branch))
        feeder.flush()
        if not pending:
            break


GROUP_WORK = 5e11
"""Parameters x KV cells evaluated per group on a CPU: about 2 s of the starter models on 2
cores, fewer texts per group (down to one) for larger models, so a group's results (each
group is stored as it ends) are never minutes of work."""


def _group_cells(model: ctypes.c_void_p, n_batch: int, n_gpu_layers: int) -> int:
    """The KV cells one group of jobs may use: two batches, fewer for big models on a CPU.

    A function of the model and settings only (never of timing), so groups are reproducible.
    """
    cells = 2 * n_batch  # every token attends over all cells in use: keep them near two batches
    if llama_cpp.llama_supports_gpu_offload() and n_gpu_layers != 0:
        return cells
    return max(64, min(cells, int(GROUP_WORK / max(1, llama_cpp.llama_model_n_params(model)))))


def _new_sampler(temperature: float, top_p: float, seed: int, index: int) -> ctypes.c_void_p:
    """Temperature, then top-p, then a seeded draw: the sampler that ``scoring.nucleus`` models."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
    llama_cpp.llama_sampler_chain_add(
        chain, llama_cpp.llama_sampler_init_dist((seed * 1_000_003 + index) % 2**32)
    )
    return chain
