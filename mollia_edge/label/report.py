"""The job's outputs: the labelled table, the exported classifier, the report and its summary,
written together (:func:`write_outputs`)."""

from __future__ import annotations

import json
import resource
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agreement import confusion_text
from ..config import MODEL_SETTINGS
from ..data import write_table_atomic
from ..errors import quoted, quoted_list
from ..files import all_or_nothing, atomic_write_text
from ..llm.catalog import ModelFile, inspect_gguf
from ..session import RowLabel
from ..teaching import TeachingCheck
from .context import JobContext
from .final import FinalModel
from .job import NEW_COLUMNS, LabelResult
from .llm_stages import Encoded, LabelModelFit, SeedScores
from .loop import LoopResult
from .rows import RowLabels


@dataclass(frozen=True)
class Outcome:
    """Every stage's result, in the order the stages ran, and their seconds."""

    encoded: Encoded
    seeds: SeedScores
    fit: LabelModelFit
    teaching: TeachingCheck | None
    loop: LoopResult
    final: FinalModel
    rows: RowLabels
    seconds: dict[str, float]


def record_speed(context: JobContext) -> dict[str, dict[str, float]]:
    """Per model, over every run of the session: texts annotated, seconds, file size and quant
    (recorded in the session, which keeps the totals across resumed runs)."""
    totals = context.session.stage("llm_speed") or {}
    panel = context.panel
    for name, model_file in zip(context.prep.models.display, context.prep.models.resolved):  # released ones too
        before = totals.get(name, {"texts": 0, "seconds": 0.0})
        computed = panel.computed[name]
        seconds = before["seconds"] + (panel.seconds[name] if computed else 0.0)
        totals[name] = {"texts": before["texts"] + computed, "seconds": round(seconds, 3),
                        "file_mib": round(model_file.size / 2**20, 1), "quant": declared_quant(model_file)}
    context.session.put_stage("llm_speed", totals, sum(panel.seconds.values()))
    return totals


def declared_quant(model_file: ModelFile) -> str:
    """The catalog's quant name of a model file, else the quantization its GGUF header declares
    (a user's own file), else "-"."""
    if model_file.quant:
        return model_file.quant
    try:
        return inspect_gguf(model_file.path).file_type or "-"
    except (OSError, ValueError, struct.error):
        return "-"


def report(context: JobContext, outcome: Outcome, speed: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """The run's report (JSON-able): settings chosen, sizes, sources, speeds, times."""
    current, n, labels = outcome.rows.current, context.n, context.prep.labels
    loop, fit, panel = outcome.loop, outcome.fit, context.panel
    distribution = Counter(current[i].label for i in range(n))
    r, b = loop.rounds
    seeds_report = fit.llm_report or {}
    teaching = outcome.teaching
    result = {
        "session": context.session.session_id, "rows": n, "labels": list(labels),
        "seed_rows": int(len(context.seed_rows)), "label_model": fit.model.kind,
        "label_model_members": fit.model.describe(), "models": panel.names,
        "llm_settings": {m.name: {key: getattr(m.llm or context.config.llm, key) for key in MODEL_SETTINGS}
                         for m in panel.models},
        "llm_rows": int(len(outcome.rows.llm_rows) + len(context.seed_rows)),
        "llm_accuracy_on_seeds": {m: v["accuracy_scores"] for m, v in seeds_report.items()},
        "llm_agreement_on_seeds": seeds_report, "shots": outcome.seeds.shots, "llm_budget": context.budget.report(),
        "text_annotator": _text_annotator_report(context, outcome.seeds),
        "llm_value": _value_report(outcome.seeds, speed),
        "calibration": outcome.final.calibration,
        "classifier_rows_from": outcome.final.choice,
        "guarantee": outcome.rows.guarantee.as_dict() if outcome.rows.guarantee else None,
        "classifier": loop.classifier.choice,
        "classifier_teacher": teaching.as_dict() if teaching else {"teacher": "label model", "why": _teacher_why(context)},
        "human_rows": len(context.human), "al_run": loop.run_id,
        "abstain_below": round(fit.abstain_below, 6), "abstained_rows": int(len(loop.abstained)),
        "llm_speed": speed, "llm_residency": {**context.residency, "loads": dict(panel.loads)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "label_distribution": {label: distribution.get(label, 0) for label in labels},
        "label_sources": dict(sorted(Counter(current[i].source for i in range(n)).items())),
        "needs_review": int(sum(current[i].needs_review for i in range(n))), "rounds": r, "batch": b,
        "al_stop": _stop_report(context, loop),
        "truncated_for_llms": len(panel.truncated), "chunked_for_llms": len(panel.chunked),
        "long_texts_for_encoder": outcome.encoded.long or None, "warnings": warnings,
        "encoder": {"folder": str(outcome.encoded.encoder.folder) if outcome.encoded.encoder.folder else None,
                    "sha256": outcome.encoded.encoder.sha256},
        "seconds": {stage: round(s, 3) for stage, s in outcome.seconds.items()},
    }
    if context.prep.truth is not None:
        llm_rows = outcome.rows.llm_rows
        in_sample = np.isin(llm_rows, outcome.seeds.sample)  # the LLMs alone: on the random sample, not the queried rows
        result["gold"] = _gold_quality(context.prep.truth, current, context.seed_rows, llm_rows[in_sample],
                                       outcome.rows.votes[in_sample], panel.names, labels)
        if outcome.rows.guarantee is not None:
            accepted = sorted(outcome.rows.guarantee.accepted)
            wrong = sum(current[i].label != context.prep.truth[i] for i in accepted if context.prep.truth[i] is not None)
            result["guarantee"]["gold_error_accepted"] = round(wrong / len(accepted), 4) if accepted else None
    return result


def _value_report(seeds: SeedScores, speed: dict[str, Any]) -> dict[str, Any] | None:
    """What each LLM bought: its value on the seed rows, the decision, its texts and seconds."""
    if not seeds.values:
        return None
    return {name: {**value, "texts": speed.get(name, {}).get("texts", 0),
                   "seconds": speed.get(name, {}).get("seconds", 0.0)} for name, value in seeds.values.items()}


def _stop_report(context: JobContext, loop: LoopResult) -> dict[str, Any] | None:
    """The stopping rule's kappa per round and why the loop stopped (None without a rule)."""
    if loop.stopping is None:
        return None
    recorded = context.store.al_rounds(loop.run_id) if loop.run_id else []
    return {"rule": "stabilising predictions" if loop.stopping.stable else "LLM minutes",
            "kappas": [m.get("stop_kappa") for m in recorded],
            "stopped": next((m["stopped"] for m in recorded if m.get("stopped")), None)}


def _teacher_why(context: JobContext) -> str:
    if context.config.al.teacher == "label_model":
        return 'al.teacher = "label_model"'
    return "too few seed rows or no LLM sample to cross-validate on"


def _text_annotator_report(context: JobContext, seeds: SeedScores) -> dict[str, Any] | None:
    """Whether the text's own annotator joined the label model, and its (out-of-fold) seed accuracy."""
    if seeds.text_proba is None:
        return None
    rows = context.seed_rows
    right = seeds.text_proba[rows].argmax(axis=1) == context.seed_label[rows]
    return {"accuracy_on_seeds": round(float(np.mean(right)), 4)}


def _gold_quality(truth: Sequence[str | None], current: dict[int, RowLabel], seed_rows: np.ndarray,
                  llm_rows: np.ndarray, votes: np.ndarray, models: Sequence[str], labels: Sequence[str]) -> dict:
    """:func:`~mollia_edge.quality.gold_quality` of the final labels; votes (m, N): each LLM's
    own label index on ``llm_rows``."""
    from ..quality import gold_quality

    index = {label: i for i, label in enumerate(labels)}
    n = len(truth)
    scored = np.ones(n, bool)
    scored[seed_rows] = False
    final = np.array([index[current[i].label] for i in range(n)])
    sources = [current[i].source for i in range(n)]
    reference = np.array([-1 if t is None else index[t] for t in truth])
    confidence = np.array([current[i].confidence for i in range(n)])
    return gold_quality(reference, final, sources, scored, llm_rows,
                        {m: votes[:, j] for j, m in enumerate(models)}, len(labels), confidence)


def summary(report: dict[str, Any]) -> str:
    """The report in a few lines (``OUTPUT.report.txt``, and what ``label`` prints)."""
    rounds = (f"active learning: {report['rounds']} round(s) of {report['batch']}" if report["rounds"] else
              "no active learning (0 rounds): the classifier learns from the seed rows and the LLM sample")
    stopped = (report.get("al_stop") or {}).get("stopped")
    lines = [
        f"mollia-edge label: {report['rows']} rows, {len(report['labels'])} labels, "
        f"{report['seed_rows']} seed rows, label model {report['label_model']}",
        f"LLM-annotated rows: {report['llm_rows']} ({quoted_list(report['models'], 10, quote=False)}); "
        + rounds + (f" (stopped: {stopped})" if stopped else ""),
        f"abstained: {report['abstained_rows']} queried rows below confidence {report['abstain_below']:.3f} "
        "(for review, not trained on)",
    ]
    for model, accuracy in report["llm_accuracy_on_seeds"].items():
        confused = confusion_text(report["llm_agreement_on_seeds"][model].get("confused", []))
        lines.append(f"  {quoted(model, quote=False)}: accuracy on seeds {accuracy:.3f}"
                     + (f"; confuses {confused}" if confused else ""))
    for model, value in (report.get("llm_value") or {}).items():
        lines.append(f"  {quoted(model, quote=False)}: {value['decision']} ({value['why']}); "
                     f"{value['texts']} texts in {value['seconds']:.0f} s")
    if report.get("guarantee"):
        lines.append("guarantee: " + report["guarantee"]["line"])
    for source, c in (report.get("calibration") or {}).items():
        if isinstance(c, dict):
            lines.append(f"{source} confidence: temperature {c['temperature']:.2f} fitted on the seed rows, cross-fitted "
                         f"(right on {c['seed_accuracy']:.3f}; ECE {c['seed_ece_before']:.3f} -> {c['seed_ece_after']:.3f})")
    if report.get("classifier_rows_from"):
        c = report["classifier_rows_from"]
        lines.append(f"classifier rows labelled by: {c['chosen']} (right on the seed rows, cross-fitted: "
                     + ", ".join(f"{name} {acc:.3f}" for name, acc in c["seed_accuracy"].items()) + ")")
    teacher = report["classifier_teacher"]
    lines.append(f"classifier learns from: {teacher['teacher']} ({teacher['why']})")
    residency = report["llm_residency"]
    lines.append(f"LLMs in memory: {residency['resident']} of {residency['models']} at a time; loads: "
                 + ", ".join(f"{quoted(m, quote=False)} {v}" for m, v in residency["loads"].items()))
    lines.append("labels: " + ", ".join(f"{quoted(k, quote=False)} {v}" for k, v in report["label_distribution"].items()))
    lines.append("sources: " + ", ".join(f"{k} {v}" for k, v in report["label_sources"].items()))
    lines.append(f"needs review: {report['needs_review']}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    if "gold" in report:
        from ..quality import quality_lines

        lines.extend(quality_lines(report["gold"]))
    return "\n".join(lines) + "\n"


GUARANTEE_COLUMNS = ("accepted", "calibration_row", "reviewed")
"""With a guarantee: whether the label is accepted; whether a person's label of the row counts as
a calibration row (:mod:`.accept`); ``reviewed``, empty, for a person to mark the rows they checked
before giving the file back to ``label``."""


def table_rows(context: JobContext, labelled: RowLabels) -> tuple[list[str], list[dict[str, Any]]]:
    """The output table: every input column and row, plus the new columns (and
    :data:`GUARANTEE_COLUMNS` with a guarantee)."""
    prep, current, guarantee = context.prep, labelled.current, labelled.guarantee
    new = [*NEW_COLUMNS, *(GUARANTEE_COLUMNS if guarantee is not None else ())]
    columns = list(prep.columns) + [col for col in new if col not in prep.columns]
    rows = []
    for i, row in enumerate(prep.rows):
        lab = current[i]
        rows.append({
            **row, "label": lab.label, "label_source": lab.source,
            "confidence": None if lab.confidence is None else round(float(lab.confidence), 4),
            "negative_labels": "|".join(lab.negatives), "needs_review": "true" if lab.needs_review else "false",
            "llm_votes": lab.votes,
        })
        if guarantee is not None:
            rows[-1].update(accepted="true" if i in guarantee.accepted else "false",
                            calibration_row="true" if i in guarantee.calibration else "false",
                            reviewed=row.get("reviewed") or "")
    return columns, rows


def write_outputs(context: JobContext, outcome: Outcome, warnings: list[str]) -> LabelResult:
    """The labelled table, the classifier, the report and its summary: all five or none."""
    job, prep, panel = context.job, context.prep, context.panel
    if panel.truncated:
        context.say(f"{len(panel.truncated)} text(s) were cut for the LLMs (llm.long_texts = "
                    f"{job.config.llm.long_texts!r}, llm.max_text_tokens = {job.config.llm.max_text_tokens}, "
                    f"llm.max_chunks = {job.config.llm.max_chunks})")
    columns, rows = table_rows(context, outcome.rows)
    classifier_path = job.beside_output(".classifier.onnx")
    result = report(context, outcome, record_speed(context), warnings)
    text = summary(result)
    report_path, summary_path = job.beside_output(".report.json"), job.beside_output(".report.txt")
    with all_or_nothing():  # the five files appear together or not at all (a full disk: none)
        export_classifier(outcome.final.classifier, classifier_path, prep.labels, outcome.encoded.encoder)
        atomic_write_text(report_path, json.dumps(result, indent=2, sort_keys=True) + "\n")
        atomic_write_text(summary_path, text)
        write_table_atomic(job.output, rows, columns, formula_guard=job.formula_guard)
    context.session.set_state("done")
    return LabelResult(job.output, job.session_path, classifier_path, report_path, summary_path, text,
                       warnings, context.session.session_id, outcome.final.classifier, outcome.final.proba)


def export_classifier(clf: Any, path: Path, labels: Sequence[str], encoder: Any) -> None:
    """The classifier as one ONNX graph from token ids to probabilities (encoder included, labels
    in its metadata) and the tokenizer beside it: what `mollia-edge predict` runs."""
    from ..predict import export_classifier as export

    export(clf, encoder, path, labels)
