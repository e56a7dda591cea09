"""The main job: label every row of a table with MoLLIA (``mollia-edge label``), resumably.

:func:`run_label_job` (:mod:`.run`) is the library call behind the command (and the TUI): a
short driver over named stages, each a function of the job's context (:mod:`.context`) and the
frozen results of the stages before it:

1. preparation (:mod:`.prepare`): read and check the settings, the input and the models; rows
   that already have a label, and rows a person labelled in the session (the TUI:
   :func:`open_job_session`), are the human seed set; a changed seed set starts a new
   active-learning run, the cached LLM outputs are reused;
2. ``encoding`` (:mod:`.llm_stages`): every text encoded once (embeddings cached beside the
   session store) -> :class:`Encoded`;
3. ``llm_seeds``: the text's own annotator, each LLM's demonstrations and the seed rows'
   signals; the seeded random sample of other rows (``llm_sample``, default 500) -> :class:`SeedScores`;
4. ``label_model``: the LLMs annotate the sample; MoLAM (or the seedless Dawid-Skene model) is
   fitted on the seed rows and the sample -> :class:`LabelModelFit`;
5. ``teaching``: whether the label model's labels teach the final classifier -> ``TeachingCheck``;
6. ``active_learning`` (:mod:`.loop`): Algorithm 1; each round's queried rows are annotated by
   the LLMs (on demand) and labelled by the label model -> :class:`LoopResult`;
7. ``classifier`` (:mod:`.final`): the final classifier, trained on everything labelled -> :class:`FinalModel`;
8. ``labelling`` (:mod:`.rows`): every row's label -> :class:`RowLabels`; then the outputs
   (:mod:`.report`), all five written together.

Budget: the LLMs see only seed rows + sample + ``rounds x batch`` queried rows. Final label
sources: ``seed`` (kept as given), ``llm_mixture`` (rows the LLMs annotated, labelled by the
label model), ``classifier`` (all other rows). ``needs_review``: the classifier disagrees with
the label model, or the confidence is below ``review_threshold``.

Every LLM output, round and label is committed to the session store as it is made; running
the same job again resumes it and ends with the same output as an uninterrupted run.
Progress goes to a ``progress(stage, done, total)`` callback, warnings to ``warn(message)``;
neither ever carries input text.
"""

from .final import FinalModel
from .job import MAX_BATCH, MAX_ROUNDS, NEW_COLUMNS, LabelJob, LabelResult, Progress, Warn
from .llm_stages import Encoded, LabelModelFit, SeedScores, encode_texts
from .loop import ClassifierSetup, LoopResult
from .prepare import al_run_id
from .report import summary
from .rows import RowLabels
from .run import run_label_job
from .session_api import JobSession, open_job_session

__all__ = [
    "MAX_BATCH", "MAX_ROUNDS", "NEW_COLUMNS", "ClassifierSetup", "Encoded", "FinalModel", "JobSession", "LabelJob",
    "LabelModelFit", "LabelResult", "LoopResult", "Progress", "RowLabels", "SeedScores", "Warn", "al_run_id",
    "encode_texts", "open_job_session", "run_label_job", "summary",
]
