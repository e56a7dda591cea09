"""The active-learning loop replayed on recorded LLM outputs (the MoLLIA paper's TREC files, or any dataset recorded that way).

Per seed: a seeded split puts ``--test-size`` rows aside (gold labels, for micro-F1) and the
rest in the pool; 50 seed rows from the pool get gold labels; MoLAM is fitted once on them
and on the pool's LLM signals (never on test rows). Annotators, as in the paper:

* ``mollia``: MoLAM + negative learning (NL) + annotation-discrepancy weights (AD) - Table 4 A;
* ``B``: MoLAM + NL; ``C``: MoLAM + AD; ``D``: MoLAM alone (Table 4);
* ``vote`` (vote ensemble of the LLMs), ``best-llm`` (the single LLM most accurate on that
  draw's seed rows: chosen on the seeds, not by name; on TREC Mistral or Qwen, not Yi, which
  the older tables name), ``oracle`` (gold labels): plain cross-entropy, as the paper's baselines.

The MoLAM variants abstain as the config says (``molam.abstain_below``/``max_abstain_share``):
the loop sets those rows aside and queries others; ``--abstain-below 0`` gives the paper's
MoLAM, which labels every row.

Round r = the model after r queries (round 10: 550 labelled rows). Head mode trains an MLP on
frozen MiniLM embeddings (optionally beside hashed TF-IDF n-grams, ``--lexical-bits``);
top-layers mode also fine-tunes MiniLM's top layer(s) (``--top-layers``) on cached hidden states
(kept in results/cache); each mini-batch is cut to its longest text (``--length-buckets``: batch
rows of similar length).

``--out`` JSON: ``round10`` and ``curves`` (micro-F1 mean and sd), ``label_noise`` (share of
wrong labels among the rows the annotator labelled) as ``{MODE: {STRATEGY: {ANNOTATOR: ..}}}``,
``round_seconds`` as ``{MODE: {STRATEGY: ..}}``, and the ``settings``.

    OPENBLAS_NUM_THREADS=1 python scripts/bench_al.py ../shared/data/mollia-paper --out results/bench_al.json

``--dataset NAME`` replays ``NAME_<llm>.jsonl`` (every LLM file there; same row format as the
TREC files), its label set the files' gold labels sorted, or ``--labels`` in the order of their
``llm_logits``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

import mollia_edge.molam
from mollia_edge.al.annotators import (
    Annotator,
    MolamAnnotator,
    OracleAnnotator,
    PrecomputedAnnotator,
    SingleLLMAnnotator,
    VoteAnnotator,
    abstaining_labels,
    confidence_floor,
)
from mollia_edge.al.encoder import EmbeddingCache, Encoder, HiddenStates, encode_cached, load_top_layers
from lexical import with_lexical_features
from mollia_edge.al.loop import ActiveLearningTask, RoundMetrics, draw_seed_rows, run_active_learning
from replay import ReplayData, load_replay
from mollia_edge.al.strategies import STRATEGIES
from mollia_edge.config import ActiveLearningConfig, MolamConfig
from mollia_edge.errors import DataError
from mollia_edge.store import Store

ANNOTATORS = ("mollia", "B", "C", "D", "vote", "best-llm", "oracle")
MOLAM_VARIANTS = {  # name: (negative learning, discrepancy weighting), paper Table 4
    "mollia": (True, True), "B": (True, False), "C": (False, True), "D": (False, False),
}
CACHE = Path("results/cache")


def split(n_rows: int, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test rows, pool rows), both sorted, from a permutation seeded by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[:test_size]), np.sort(order[test_size:])


def molam_annotations(
    data: ReplayData, seeds: np.ndarray, pool: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """MoLAM's (class probabilities (n, K), y- (n, K), fit seconds) for every row, fitted on the
    seed rows and the pool; cached under results/cache per seed rows, pool and molam.py source."""
    key = hashlib.sha256(
        seeds.tobytes() + pool.tobytes() + str(seed).encode() + Path(mollia_edge.molam.__file__).read_bytes()
        + data.scores.tobytes() + "|".join(data.labels).encode()
    ).hexdigest()[:16]
    path = CACHE / f"molam-proba-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["probabilities"], cached["negatives"], float(cached["seconds"])
    annotator = MolamAnnotator(
        data.scores, data.consistency, seeds, data.gold[seeds], len(data.labels),
        unlabelled_rows=np.setdiff1d(pool, seeds), seed=seed,
    )
    probabilities = annotator.model.predict_proba(data.scores, data.consistency)
    negatives = annotator.model.negative_labels(data.scores)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, probabilities=probabilities, negatives=negatives, seconds=annotator.fit_seconds_)
    return probabilities, negatives, annotator.fit_seconds_


def best_llm(data: ReplayData, seeds: np.ndarray) -> int:
    """The LLM whose top-scored label is right on the most seed rows (the first on a tie)."""
    right = data.scores[seeds].argmax(axis=2) == data.gold[seeds, None]
    return int(np.argmax(right.mean(axis=0)))


def annotators_for(data: ReplayData, names: list[str], seeds: np.ndarray, pool: np.ndarray, seed: int,
                   base: ActiveLearningConfig, molam_config: MolamConfig,
                   console: Console) -> dict[str, tuple[Annotator, ActiveLearningConfig]]:
    """Each annotator with the loss terms it trains with; the MoLAM variants abstain as
    MolamAnnotator does with ``molam_config``."""
    plain = dataclasses.replace(base, negative_learning=False, discrepancy_weighting=False)
    out: dict[str, tuple[Annotator, ActiveLearningConfig]] = {}
    if any(name in MOLAM_VARIANTS for name in names):
        probabilities, negatives, seconds = molam_annotations(data, seeds, pool, seed)
        floor = confidence_floor(
            probabilities[np.setdiff1d(pool, seeds)], molam_config.abstain_below, molam_config.max_abstain_share
        )
        labels = abstaining_labels(probabilities, floor)
        given = pool[labels[pool] >= 0]
        console.print(
            f"seed {seed}: MoLAM fitted in {seconds:.0f} s; labels {len(given) / len(pool):.2f} of the pool "
            f"(abstains below confidence {floor:.3f}), accuracy there {np.mean(labels[given] == data.gold[given]):.4f}"
        )
        # the name keys the stored runs
        name = f"molam-abstain{floor:g}" if floor > probabilities[pool].max(axis=1).min() else "molam"
        molam = PrecomputedAnnotator(name, labels, len(data.labels), negatives)
        for name, (nl, ad) in MOLAM_VARIANTS.items():
            out[name] = (molam, dataclasses.replace(base, negative_learning=nl, discrepancy_weighting=ad))
    out["vote"] = (VoteAnnotator(data.scores, data.consistency), plain)
    best = best_llm(data, seeds)
    console.print(f"seed {seed}: best single LLM on the seed rows: {data.llm_names[best]}")
    out["best-llm"] = (SingleLLMAnnotator(data.scores, data.consistency, best, "best-llm"), plain)
    out["oracle"] = (OracleAnnotator(data.gold, len(data.labels)), plain)
    return {name: out[name] for name in names}


def model_inputs(data: ReplayData, mode: str, lexical_bits: int, console: Console, top_layers: int = 1) -> object:
    """Head mode: embeddings (n, 384) [+ hashed TF-IDF]; top-layers: hidden states below the
    ``top_layers`` trained layers."""
    started = time.perf_counter()
    encoder = Encoder(intra_op_threads=2)
    if mode == "head":
        inputs = encode_cached(encoder, data.texts, EmbeddingCache(CACHE))
        if lexical_bits:
            inputs = with_lexical_features(inputs, data.texts, lexical_bits)
    else:
        inputs = cached_hidden_states(encoder, data.texts, top_layers)
    console.print(f"{mode} inputs ready in {time.perf_counter() - started:.0f} s")
    return inputs


def cached_hidden_states(encoder: Encoder, texts: list[str], below_top: int = 1) -> HiddenStates:
    """``encoder.hidden_states`` of ``texts``, kept in results/cache keyed by the texts, the
    encoder file and the settings."""
    model = encoder.model_path
    key = hashlib.sha256(
        "\x00".join(texts).encode() + f"|{model.resolve()}|{model.stat().st_size}|{encoder.max_length}|{below_top}".encode()
    ).hexdigest()[:16]
    path = CACHE / f"hidden-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return HiddenStates(cached["values"], cached["mask"])
    states = encoder.hidden_states(texts, below_top=below_top)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, values=states.values, mask=states.mask)
    partial.replace(path)
    return states


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


def table_cell(f1: dict | None, noise: float | None) -> str:
    """'mean ± sd (label noise)' of one annotator, mode and strategy; '-' when not run."""
    if f1 is None:
        return "-"
    return f"{f1['mean']:.4f} ± {f1['sd']:.4f}" + (f" ({noise:.3f})" if noise is not None else "")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(curves)
    strategies = [name for name in STRATEGIES if any(name in curves[mode] for mode in modes)]
    names = sorted({name for mode in modes for per in curves[mode].values() for name in per},
                   key=lambda name: (ANNOTATORS.index(name) if name in ANNOTATORS else len(ANNOTATORS), name))
    colours = dict(zip(names, plt.cm.tab10.colors * 2))  # one colour per annotator in every panel
    # one row per mode, one column per strategy
    figure, axes = plt.subplots(len(modes), len(strategies), figsize=(5 * len(strategies), 4 * len(modes)), squeeze=False)
    for (row, mode), (column, strategy) in itertools.product(enumerate(modes), enumerate(strategies)):
        axis = axes[row][column]
        if strategy not in curves[mode]:
            axis.set_axis_off()
            continue
        for name in sorted(curves[mode][strategy], key=names.index):
            curve = curves[mode][strategy][name]
            axis.plot(range(len(curve["mean"])), curve["mean"], marker="o", markersize=3, label=name, color=colours[name])
        axis.set(title=f"{mode}, {strategy}", xlabel="round (queries of 50)", ylabel="micro-F1")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with the recorded NAME_<llm>.jsonl files")
    parser.add_argument("--dataset", default="trec", help="NAME of the recorded files (default: trec)")
    parser.add_argument("--labels", help="comma-separated label set in the files' llm_logits order "
                                         "(default: TREC's order for trec, else the gold labels sorted)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (the defaults were tuned on 0-4: "
                             "report on others)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mode", choices=("head", "top-layers", "both"), default="head")
    strategies = parser.add_mutually_exclusive_group()
    strategies.add_argument("--strategies", default="random,coreset", help=f"comma-separated: {', '.join(STRATEGIES)}")
    strategies.add_argument("--all", action="store_true", help="every query strategy")
    parser.add_argument("--annotators", default=",".join(ANNOTATORS))
    parser.add_argument("--test-size", type=int, default=500)
    default = "(default: the config's)"
    parser.add_argument("--seed-size", type=int, help=f"seed rows with gold labels {default}")
    parser.add_argument("--query-size", type=int, help=f"B: rows queried per round {default}")
    parser.add_argument("--epochs", type=int, help=f"training epochs per round {default}")
    parser.add_argument("--patience", type=int, help=f"top-layers early-stopping patience in epochs {default}")
    parser.add_argument("--head-patience", type=int, help=f"head-mode early-stopping patience in epochs {default}")
    parser.add_argument("--learning-rate", type=float, help=f"AdamW lr of the trained encoder layers {default}")
    parser.add_argument("--head-learning-rate", type=float, help=f"AdamW lr of the head {default}")
    parser.add_argument("--length-buckets", type=int,
                        help=f"top-layers mode: sort runs of N shuffled batches by length, 0: off {default}")
    parser.add_argument("--early-stopping", choices=("loss", "accuracy"),
                        help=f"validation score that picks the epoch kept {default}")
    parser.add_argument("--top-layers", type=int, choices=(1, 2), help=f"top-layers mode: encoder layers trained {default}")
    parser.add_argument("--abstain-below", type=float, help=f"MoLAM abstains below this confidence; the loop "
                        f"queries other rows (0: never, as the paper) {default}")
    parser.add_argument("--max-abstain-share", type=float,
                        help=f"MoLAM abstains on at most this share of the pool {default}")
    parser.add_argument("--alpha", type=float, help=f"discrepancy weight alpha (Eq. 8) {default}")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the classifier")
    parser.add_argument("--lexical-bits", type=int, default=0, help="head mode: add 2**N hashed TF-IDF n-grams (0: off)")
    parser.add_argument("--store", type=Path, help="SQLite store: finished rounds are kept and a rerun resumes")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of the curves (needs matplotlib)")
    args = parser.parse_args(argv)
    names = args.annotators.split(",")
    if unknown := set(names) - set(ANNOTATORS):
        parser.error(f"unknown annotators {sorted(unknown)}: choose from {', '.join(ANNOTATORS)}")
    strategy_names = list(STRATEGIES) if args.all else args.strategies.split(",")
    modes = ["head", "top-layers"] if args.mode == "both" else [args.mode]
    console = Console(width=160)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        console.print("matplotlib is not installed: no plot (the curves are in the JSON)")
        args.plot = None

    try:
        data = load_replay(args.data, args.dataset, tuple(args.labels.split(",")) if args.labels else None)
    except DataError as exc:
        parser.error(str(exc))
    overrides = {"seed_size": args.seed_size, "query_size": args.query_size, "epochs": args.epochs,
                 "patience": args.patience, "head_patience": args.head_patience, "learning_rate": args.learning_rate,
                 "head_learning_rate": args.head_learning_rate, "length_buckets": args.length_buckets,
                 "early_stopping": args.early_stopping, "top_layers": args.top_layers, "alpha": args.alpha}
    base = ActiveLearningConfig(rounds=args.rounds, **{k: v for k, v in overrides.items() if v is not None})
    molam_overrides = {"abstain_below": args.abstain_below, "max_abstain_share": args.max_abstain_share}
    molam_config = MolamConfig(**{k: v for k, v in molam_overrides.items() if v is not None})
    store = Store(args.store) if args.store else None
    runs: dict[tuple[str, str, str], list[list[RoundMetrics]]] = {}
    for mode in modes:
        inputs = model_inputs(data, mode, args.lexical_bits if mode == "head" else 0, console, base.top_layers)
        init_layers = load_top_layers(base.top_layers) if mode == "top-layers" else None
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            test, pool = split(len(data.gold), args.test_size, seed)
            seeds = draw_seed_rows(pool, base.seed_size, seed)
            task = ActiveLearningTask(inputs, pool, len(data.labels), data.gold, test)
            for name, (annotator, config) in annotators_for(data, names, seeds, pool, seed, base, molam_config, console).items():
                for strategy in strategy_names:
                    started = time.perf_counter()
                    rounds = run_active_learning(
                        task, annotator, strategy, config=config, seed=seed, seed_rows=seeds,
                        mode=mode, init_layers=init_layers, store=store, threads=args.threads,
                    )
                    runs.setdefault((mode, strategy, name), []).append(rounds)
                    console.print(
                        f"{mode} {strategy} {name} seed {seed}: round {rounds[-1].round} micro-F1 "
                        f"{rounds[-1].micro_f1:.4f} ({time.perf_counter() - started:.0f} s)"
                    )

    report: dict = {
        "settings": {"dataset": args.dataset, "llms": list(data.llm_names), "labels": list(data.labels), "seeds": args.seeds, "first_seed": args.first_seed, "rounds": args.rounds, "test_size": args.test_size,
                     "lexical_bits": args.lexical_bits, "threads": args.threads, "molam": dataclasses.asdict(molam_config), "config": dataclasses.asdict(base)},
        "round10": {}, "round_seconds": {}, "curves": {}, "label_noise": {},
    }
    for (mode, strategy, name), per_seed in runs.items():
        last = [rounds[-1].micro_f1 for rounds in per_seed]
        report["round10"].setdefault(mode, {}).setdefault(strategy, {})[name] = mean_sd(last)
        curve = np.array([[m.micro_f1 for m in rounds] for rounds in per_seed])
        report["curves"].setdefault(mode, {}).setdefault(strategy, {})[name] = {
            "mean": curve.mean(axis=0).tolist(), "sd": curve.std(axis=0).tolist(),
        }
        noise = [m.label_noise for rounds in per_seed for m in rounds if m.label_noise is not None]
        report["label_noise"].setdefault(mode, {}).setdefault(strategy, {})[name] = float(np.mean(noise)) if noise else None
        seconds = [m.train_seconds + m.evaluate_seconds + m.query_seconds + m.annotate_seconds
                   for rounds in per_seed for m in rounds]
        report["round_seconds"].setdefault(mode, {}).setdefault(strategy, []).extend(seconds)
    report["round_seconds"] = {
        mode: {strategy: float(np.mean(v)) for strategy, v in per_mode.items()}
        for mode, per_mode in report["round_seconds"].items()
    }

    table = Table(title=f"{args.dataset} ({', '.join(data.llm_names)}) round-{args.rounds} micro-F1, mean ± sd over {args.seeds} seeds "
                        f"({args.test_size} test rows; label noise of the queried rows in brackets)")
    table.add_column("annotator")
    columns = [(mode, strategy) for mode in report["round10"] for strategy in report["round10"][mode]]
    for mode, strategy in columns:
        table.add_column(f"{mode}\n{strategy}", justify="right")
    for name in names:
        cells = [(report["round10"][mode][strategy].get(name), report["label_noise"][mode][strategy].get(name))
                 for mode, strategy in columns]
        table.add_row(name, *[table_cell(f1, noise) for f1, noise in cells])
    table.add_row("seconds per round", *[f"{report['round_seconds'][mode][strategy]:.2f}" for mode, strategy in columns])
    if args.plot:
        plot(report["curves"], args.plot)
        console.print(f"wrote {args.plot}")
    print_and_save(console, table, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
