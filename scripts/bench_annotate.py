"""Annotation speed of the engine against a fair port and against its floor, side by side in one run.

For each model and each number of demonstrations (0 and 2 per label by default), on the same
texts and the same prompts:
  fair port — what a competent user writes with llama-cpp-python's high-level API
              (:func:`fair_port`): the prompt evaluated once per text after the tokens it
              shares with the previous one, label tokens evaluated from there and rolled back,
              samples through ``generate`` with its prefix matching;
  engine    — this engine, exact (T→∞) and sampled consistency;
  floor     — only the texts' own tokens and the label tokens, at the prompt-processing rate
              measured in this run for tokens that follow the shared prefix; and that plus
              the full-vocabulary logits rows the exact scores need (one after the prompt and
              one after each label token), at the cost per row measured in this run (Gemma-3's
              262k-entry vocabulary makes a row cost about as much as 1.5 tokens).
Every contender gets one warm-up run and the best of ``--repeat`` timed runs. A profile of one
exact engine run says where its time goes. Prints one table (seconds per text, ratios,
accuracy of the argmax label) and writes JSON.

    python scripts/bench_annotate.py --out docs/annotate/bench_annotate.json
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import Llama
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.config import LLMConfig
from mollia_edge.datasets import load_dataset
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.catalog import load_catalog
from mollia_edge.llm.engine import _HAS_AMX, backend_info
from mollia_edge.llm.prompts import PromptSpec, draw_demonstrations
from mollia_edge.llm.scoring import next_token_stats


def _plain_cpu_buffers() -> None:
    """The engine's AMX workaround for the high-level ``Llama`` too (it has no option for it):
    without it llama.cpp crashes on this CPU (see ``engine._HAS_AMX``)."""
    default = llama_cpp.llama_cpp.llama_model_default_params

    def params() -> llama_cpp.llama_model_params:
        p = default()
        p.use_extra_bufts = not _HAS_AMX
        return p

    llama_cpp.llama_cpp.llama_model_default_params = params


def _last_logits(llm: Llama) -> np.ndarray:
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def fair_port(
    llm: Llama, prompts: list[list[int]], continuations: list[list[int]], stop_mask: np.ndarray,
    halt: set[int], cfg: LLMConfig, seeds: list[int],
) -> np.ndarray:
    """What a competent user writes with llama-cpp-python's high-level API: per text the prompt
    evaluated once after the tokens it shares with the previous prompt (as ``generate`` matches
    prefixes), each label's tokens evaluated from that state and rolled back, the same
    statistics as the engine (:func:`next_token_stats`), and in sampled mode T answers through
    ``generate`` (its prefix matching re-evaluates one token). Returns label log-probabilities,
    shape (texts, K)."""
    exact = cfg.consistency == "exact"
    out = np.zeros((len(prompts), len(continuations)))
    for i, prompt in enumerate(prompts):
        shared = min(Llama.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), prompt), len(prompt) - 1)
        llm.n_tokens = shared
        llm.eval(prompt[shared:])
        base = llm.n_tokens
        first = next_token_stats(_last_logits(llm), [c[0] for c in continuations], None, cfg.temperature, cfg.top_p)
        out[i] = first.logprob
        for k, continuation in enumerate(continuations):
            wanted = len(continuation) if exact else len(continuation) - 1
            for j in range(wanted):
                llm.eval([continuation[j]])
                last = j == len(continuation) - 1
                s = next_token_stats(_last_logits(llm), continuation[j + 1 : j + 2] or [0],
                                     stop_mask if last else None, cfg.temperature, cfg.top_p)
                out[i, k] += 0.0 if last else s.logprob[0]
            llm.n_tokens = base  # roll back: the next eval drops the label's cells
        if not exact:  # one token again, or generate would sample from the last label token's logits
            llm.n_tokens = base - 1
        for t in range(0 if exact else cfg.samples):
            llm.set_seed(seeds[i] + t)
            for n, token in enumerate(llm.generate(prompt, temp=cfg.temperature, top_p=cfg.top_p, top_k=0,
                                                   min_p=0.0, repeat_penalty=1.0)):
                if token in halt or n + 1 >= cfg.max_new_tokens:
                    break
    return out


def prompt_rate(model: Path, prefix: list[int], block: list[int], cfg: LLMConfig) -> tuple[float, float]:
    """Tokens per second for ``block`` evaluated right after ``prefix`` (where the texts' own
    tokens sit), in one plain sequence, and the seconds one row of full-vocabulary logits adds
    (the same block with logits at every position, less without); best of three each."""
    seconds = {}
    for logits_all in (False, True):
        llm = Llama(
            model_path=str(model), n_ctx=len(prefix) + len(block) + 8, n_batch=cfg.n_batch, logits_all=logits_all,
            flash_attn=cfg.flash_attn, n_threads=cfg.n_threads, n_threads_batch=cfg.n_threads,
            n_gpu_layers=cfg.n_gpu_layers, verbose=False,
        )
        best = float("inf")
        for _ in range(3):
            llm.reset()
            llm.eval(prefix)
            started = time.perf_counter()
            llm.eval(block)
            best = min(best, time.perf_counter() - started)
        seconds[logits_all] = best
        llm.close()
    return len(block) / seconds[False], max(0.0, seconds[True] - seconds[False]) / len(block)


def _best_of(repeat: int, run: Callable[[], object], n: int) -> tuple[float, object]:
    """One warm-up run, then the best of ``repeat`` timed runs; seconds per text and the last result."""
    result = run()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, (time.perf_counter() - started) / n)
    return best, result


def profile_shares(run: Callable[[], object]) -> dict[str, float]:
    """Where one engine run spends its time (cProfile): llama_decode (inside ``_Feeder.flush``),
    the numpy statistics on logits rows, the samplers, and the rest (Python bookkeeping)."""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats
    total = max(v[3] for v in stats.values())
    parts = {"decode": ("flush", "tottime"), "logits statistics": ("next_token_stats", "cumtime"),
             "sampling": ("sample", "cumtime")}
    shares = {}
    for part, (function, kind) in parts.items():
        seconds = sum(v[2] if kind == "tottime" else v[3] for (_, _, f), v in stats.items() if f == function)
        shares[part] = seconds / total
    shares["other"] = max(0.0, 1 - sum(shares.values()))
    return shares


def _engine_runs(model: Path, spec: PromptSpec, cfg: LLMConfig, texts: list[str], gold: np.ndarray, repeat: int) -> dict:
    """The engine in both modes; also what the fair port needs to compute the same numbers."""
    m: dict = {}
    for mode in ("exact", "sampled"):
        with LLMAnnotator(model, spec, dataclasses.replace(cfg, consistency=mode)) as annotator:
            m["prompts"] = [annotator.prompt_tokens(t)[0] for t in texts]  # loads the model, fills the prefix

            def run(annotator: LLMAnnotator = annotator) -> object:
                return annotator.annotate(texts)

            m[f"engine_{mode}_s"], signals = _best_of(repeat, run, len(texts))
            m[f"logprob_{mode}"] = signals.label_logprob
            if mode == "exact":
                m["profile_exact"] = profile_shares(run)
                m["accuracy"] = float(np.mean(signals.label_logprob.argmax(axis=1) == gold))
            engine = annotator.engine
            m["continuations"], m["prefix_tokens"] = annotator.continuations, engine.prefix_length
            m["stop_mask"], m["halt"] = engine._stop_mask, set(np.flatnonzero(engine._halt_mask).tolist())
    return m


def bench_model(name: str, texts: list[str], gold: np.ndarray, spec: PromptSpec, cfg: LLMConfig, repeat: int) -> dict:
    model = load_catalog().resolve(name)
    spec = dataclasses.replace(spec, chat_format=model.spec.chat_format if model.spec else "none")
    m = _engine_runs(model.path, spec, cfg, texts, gold, repeat)
    prompts, continuations, prefix = m.pop("prompts"), m.pop("continuations"), m["prefix_tokens"]
    stop_mask, halt = m.pop("stop_mask"), m.pop("halt")
    llm = Llama(model_path=str(model.path), n_ctx=max(map(len, prompts)) + cfg.max_new_tokens + 8,
                n_batch=cfg.n_batch, flash_attn=cfg.flash_attn, n_threads=cfg.n_threads, n_threads_batch=cfg.n_threads,
                n_gpu_layers=cfg.n_gpu_layers, verbose=False)
    seeds = list(range(0, cfg.samples * len(prompts), cfg.samples))
    for mode in ("exact", "sampled"):
        mode_cfg = dataclasses.replace(cfg, consistency=mode)
        m[f"fair_{mode}_s"], fair = _best_of(
            repeat, lambda c=mode_cfg: fair_port(llm, prompts, continuations, stop_mask, halt, c, seeds), len(texts))
        # both compute the same numbers, up to llama.cpp's rounding in another batch shape (on this CPU
        # one prompt evaluated whole or after a cached prefix differs by up to 0.35 nats)
        engine_logprob = m.pop(f"logprob_{mode}")
        m[f"max_logprob_difference_{mode}"] = float(np.abs(fair - engine_logprob).max())
        m[f"same_argmax_{mode}"] = float(np.mean(fair.argmax(axis=1) == engine_logprob.argmax(axis=1)))
        m[f"speedup_{mode}"] = m[f"fair_{mode}_s"] / m[f"engine_{mode}_s"]
    llm.close()
    own = [len(p) - prefix for p in prompts]
    floor_tokens = sum(own) + len(texts) * sum(len(c) for c in continuations)
    block = [t for p in prompts for t in p[prefix:]][: cfg.n_batch]
    m["prompt_tokens_per_s"], m["logits_row_s"] = prompt_rate(model.path, prompts[0][:prefix], block, cfg)
    m["floor_s"] = floor_tokens / m["prompt_tokens_per_s"] / len(texts)
    # the exact scores need a logits row after the prompt and after each label token
    m["logits_rows_per_text"] = 1 + sum(len(c) for c in continuations)
    m["floor_with_logits_s"] = m["floor_s"] + m["logits_rows_per_text"] * m["logits_row_s"]
    m["own_tokens_per_text"] = float(np.mean(own))
    m["exact_over_floor"] = m["engine_exact_s"] / m["floor_s"]
    m["exact_over_floor_with_logits"] = m["engine_exact_s"] / m["floor_with_logits_s"]
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="number of texts")
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--item", default="review")
    parser.add_argument("--shots", default="0,2", help="demonstrations per label, one run per value")
    parser.add_argument("--demo-chars", type=int, default=300, help="longest demonstration text")
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after one warm-up, for every contender")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads of every contender, prompt batches included (default: the engine's "
                             "and llama-cpp-python's own defaults)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    _plain_cpu_buffers()
    cfg = LLMConfig(n_threads=args.threads)
    data = load_dataset(args.dataset)
    order = np.random.default_rng(cfg.seed).permutation(len(data.texts))
    # demonstrations: concise rows (as a user would pick), from outside the benchmarked texts
    demo_rows = [i for i in order[:400] if len(data.texts[i]) <= args.demo_chars]
    rows = order[400 : 400 + args.n]
    texts, gold = [data.texts[i] for i in rows], data.labels[rows]
    report = {"dataset": args.dataset, "n": args.n, "backend": backend_info(), "threads": cfg.n_threads,
              "samples": cfg.samples, "repeat": args.repeat, "runs": []}
    console = Console(width=230)
    for shots in (int(s) for s in args.shots.split(",")):
        demos = draw_demonstrations([data.texts[i] for i in demo_rows],
                                    [data.label_names[data.labels[i]] for i in demo_rows], shots, cfg.seed)
        spec = PromptSpec(labels=data.label_names, item=args.item, demonstrations=demos)
        for name in args.models.split(","):
            console.print(f"[dim]benchmarking {name}, {shots}-shot…[/dim]")
            report["runs"].append({"model": name, "shots": shots, **bench_model(name, texts, gold, spec, cfg, args.repeat)})
    print_and_save(console, _table(report), report, args.out)
    return 0


def _table(report: dict) -> Table:
    table = Table(title=f"{report['n']} {report['dataset']} texts, T={report['samples']}, backend {report['backend']}; "
                  f"seconds per text, best of {report['repeat']} after a warm-up")
    columns = ("model", "shots", "prefix", "fair exact", "engine exact", "×", "fair sampled", "engine sampled", "×",
               "floor", "exact/floor", "+ logits rows", "exact/that", "decode / stats / sampling / other", "accuracy")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for r in report["runs"]:
        shares = " / ".join(f"{v:.0%}" for v in r["profile_exact"].values())
        table.add_row(r["model"], str(r["shots"]), str(r["prefix_tokens"]), f"{r['fair_exact_s']:.4f}",
                      f"{r['engine_exact_s']:.4f}", f"{r['speedup_exact']:.2f}", f"{r['fair_sampled_s']:.4f}",
                      f"{r['engine_sampled_s']:.4f}", f"{r['speedup_sampled']:.2f}", f"{r['floor_s']:.4f}",
                      f"{r['exact_over_floor']:.2f}", f"{r['floor_with_logits_s']:.4f}",
                      f"{r['exact_over_floor_with_logits']:.2f}", shares, f"{r['accuracy']:.3f}")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
