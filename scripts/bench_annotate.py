"""Annotation speed and accuracy of the starter models, side by side in one run.

For each model, on the same real texts and the same prompts:
  (a) naive   — llama-cpp-python's high-level API, the prompt evaluated again for each label
                and for each of the T sampled answers (how the reference code works);
  (b) exact   — this engine, exact (T→∞) consistency;
  (c) sampled — this engine, T sampled answers;
  (d) floor   — only the texts' own tokens and the label tokens, at the prompt-processing rate
                measured in this run for tokens that follow the shared prefix.
Prints one table (seconds per text, ratios, accuracy of the argmax label) and writes JSON.
The naive port is timed once on the first ``--naive-n`` texts (it takes seconds per text); the
engine's runs and the prompt rate are each the best of a few runs.

    python scripts/bench_annotate.py --n 100 --out results/bench_annotate.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

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
from mollia_edge.llm.engine import backend_info
from mollia_edge.llm.prompts import PromptSpec, draw_demonstrations


def _log_softmax_at(row: np.ndarray, token: int) -> float:
    row = row.astype(np.float64)
    peak = row.max()
    return float(row[token] - peak - np.log(np.exp(row - peak).sum()))


def naive_seconds(
    llm: Llama, prompts: list[list[int]], continuations: list[list[int]], cfg: LLMConfig
) -> float:
    """The reference code's way: a full evaluation from scratch for every label token and for
    every sampled answer, reading only the last position's logits."""
    eog = {llm.token_eos()}
    started = time.perf_counter()
    for prompt in prompts:
        for continuation in continuations:
            for j, token in enumerate(continuation):
                llm.reset()
                llm.eval(prompt + continuation[:j])
                _log_softmax_at(np.asarray(llm.eval_logits[-1]), token)
        for _ in range(cfg.samples):
            llm.reset()
            for n, token in enumerate(
                llm.generate(prompt, temp=cfg.temperature, top_p=cfg.top_p, top_k=0, min_p=0.0, reset=False)
            ):
                if token in eog or b"\n" in llm.detokenize([token]) or n + 1 >= cfg.max_new_tokens:
                    break
    return (time.perf_counter() - started) / len(prompts)


def prompt_rate(model: Path, prefix: list[int], block: list[int], cfg: LLMConfig) -> float:
    """Tokens per second for ``block`` evaluated right after ``prefix`` (where the texts' own
    tokens sit), in one plain sequence; best of three."""
    llm = Llama(
        model_path=str(model), n_ctx=len(prefix) + len(block) + 8, n_batch=cfg.n_batch,
        flash_attn=cfg.flash_attn, n_threads=cfg.n_threads, n_gpu_layers=cfg.n_gpu_layers, verbose=False,
    )
    best = float("inf")
    for _ in range(3):
        llm.reset()
        llm.eval(prefix)
        started = time.perf_counter()
        llm.eval(block)
        best = min(best, time.perf_counter() - started)
    return len(block) / best


def bench_model(
    name: str, texts: list[str], gold: np.ndarray, spec: PromptSpec, cfg: LLMConfig, naive_n: int, repeat: int
) -> dict:
    model = load_catalog().resolve(name)
    chat_format = model.spec.chat_format if model.spec else "none"
    spec = dataclasses.replace(spec, chat_format=chat_format)
    timings: dict[str, float] = {}
    results = {}
    for mode in ("exact", "sampled"):
        with LLMAnnotator(model.path, spec, dataclasses.replace(cfg, consistency=mode)) as annotator:
            prompts = [annotator.prompt_tokens(t)[0] for t in texts]  # loads the model, fills the prefix
            timings[mode] = float("inf")
            for _ in range(repeat):  # no store: every run computes everything
                started = time.perf_counter()
                results[mode] = annotator.annotate(texts)
                timings[mode] = min(timings[mode], (time.perf_counter() - started) / len(texts))
            continuations = annotator.continuations
            prefix = annotator.engine.prefix_length
    own = [len(p) - prefix for p in prompts]
    floor_tokens = sum(own) + len(texts) * sum(len(c) for c in continuations)
    block = [t for p in prompts for t in p[prefix:]][: cfg.n_batch]
    rate = prompt_rate(model.path, prompts[0][:prefix], block, cfg)
    naive = Llama(
        model_path=str(model.path), n_ctx=max(len(p) for p in prompts) + 32, n_batch=cfg.n_batch,
        flash_attn=cfg.flash_attn, n_threads=cfg.n_threads,
        n_gpu_layers=cfg.n_gpu_layers, seed=cfg.seed, verbose=False,
    )
    naive_s = naive_seconds(naive, prompts[:naive_n], continuations, cfg)
    accuracy = float(np.mean(results["exact"].label_logprob.argmax(axis=1) == gold))
    return {
        "naive_s": naive_s,
        "exact_s": timings["exact"],
        "sampled_s": timings["sampled"],
        "floor_s": floor_tokens / rate / len(texts),
        "accuracy": accuracy,
        "prompt_tokens_per_s": rate,
        "own_tokens_per_text": float(np.mean(own)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of texts")
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--item", default="review")
    parser.add_argument("--shots", type=int, default=1, help="demonstrations per label")
    parser.add_argument("--demo-chars", type=int, default=300, help="longest demonstration text")
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    parser.add_argument("--naive-n", type=int, default=20, help="texts for the (slow) naive port: the first ones")
    parser.add_argument("--repeat", type=int, default=2, help="engine runs per mode; the best counts, as for (d)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    cfg = LLMConfig(n_threads=args.threads)
    data = load_dataset(args.dataset)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data.texts))
    # demonstrations: concise rows (as a user would pick), from outside the benchmarked texts
    demo_rows = [i for i in order[:400] if len(data.texts[i]) <= args.demo_chars]
    rows = order[400 : 400 + args.n]
    demos = draw_demonstrations(
        [data.texts[i] for i in demo_rows], [data.label_names[data.labels[i]] for i in demo_rows], args.shots, cfg.seed
    )
    spec = PromptSpec(labels=data.label_names, item=args.item, demonstrations=demos)
    texts = [data.texts[i] for i in rows]
    gold = data.labels[rows]

    report = {
        "dataset": args.dataset, "n": args.n, "backend": backend_info(), "threads": cfg.n_threads,
        "samples": cfg.samples, "naive_n": min(args.naive_n, args.n), "models": {},
    }
    console = Console(width=140)
    for name in args.models.split(","):
        console.print(f"[dim]benchmarking {name}…[/dim]")
        report["models"][name] = bench_model(name, texts, gold, spec, cfg, min(args.naive_n, args.n), args.repeat)

    table = Table(
        title=f"{args.n} {args.dataset} texts ({report['naive_n']} for naive), {len(data.label_names)} labels, "
        f"T={cfg.samples}, backend {report['backend']}; seconds per text"
    )
    for column in ("model", "(a) naive", "(b) exact", "(c) sampled", "(d) floor", "b/a", "c/a", "b/d", "accuracy"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for name, m in report["models"].items():
        m["speedup_exact"] = m["naive_s"] / m["exact_s"]
        m["speedup_sampled"] = m["naive_s"] / m["sampled_s"]
        m["exact_over_floor"] = m["exact_s"] / m["floor_s"]
        table.add_row(
            name, f"{m['naive_s']:.3f}", f"{m['exact_s']:.3f}", f"{m['sampled_s']:.3f}", f"{m['floor_s']:.3f}",
            f"{1 / m['speedup_exact']:.4f} ({m['speedup_exact']:.0f}× faster)",
            f"{1 / m['speedup_sampled']:.4f} ({m['speedup_sampled']:.0f}× faster)",
            f"{m['exact_over_floor']:.2f}", f"{m['accuracy']:.3f}",
        )
    print_and_save(console, table, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
