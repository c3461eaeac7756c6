"""Test-set evaluation: a trained model or a folder of label maps -> per-case rows -> ``summary.json``.

- :mod:`~rmseg.evaluation.config`: the ``eval`` config group (``EvalConfig``).
- :mod:`~rmseg.evaluation.inference`: whole-image (2D) / sliding-window (3D) inference through the model's
  output head (``model.head``), resampling to the label grid, :func:`evaluate_model`.
- :mod:`~rmseg.evaluation.per_case`: label maps against the test cases, one metric row per (case, structure).
- :mod:`~rmseg.evaluation.predictions`: prediction files (``<id>.png`` / ``<id>.nii.gz``).
- :mod:`~rmseg.evaluation.run`: a run's trained model -> its records (after training, and ``rmseg-eval``).
- :mod:`~rmseg.evaluation.records`: the one writer and reader of ``summary.json`` and ``per_case.csv``,
  and the reader of ``curve.csv``.

Nothing here imports the training side (``rmseg.engine.loop``, ``rmseg.cli.train``) or builds a loss.
"""

from rmseg.evaluation.config import SAVE_CHOICES, EvalConfig, eval_config
from rmseg.evaluation.inference import evaluate_model, head_of, predict_probabilities, sliding_window_overlap
from rmseg.evaluation.per_case import (COUNTS, FLAGS, METRIC_NAMES, METRICS, PERCENT, ROW_COLUMNS, check_label_values,
                                       evaluate_predictions)
from rmseg.evaluation.predictions import (find_prediction, ids_to_save, load_prediction, load_prediction_folder,
                                          save_prediction)
from rmseg.evaluation.records import (SUMMARY_KEYS, atomic_write_text, current_umask, empty_predictions, log_summary,
                                      read_curve, read_per_case, read_summary, read_times, summarize, summary_meta, summary_report,
                                      write_summary)
from rmseg.evaluation.run import evaluate_run_model
from rmseg.models.heads import softmax_probabilities

__all__ = [
    "COUNTS", "FLAGS", "METRICS", "METRIC_NAMES", "PERCENT", "ROW_COLUMNS", "SAVE_CHOICES", "SUMMARY_KEYS",
    "EvalConfig", "atomic_write_text", "check_label_values", "current_umask", "empty_predictions", "eval_config",
    "evaluate_model", "evaluate_predictions", "evaluate_run_model", "find_prediction", "head_of", "ids_to_save", "load_prediction",
    "load_prediction_folder", "log_summary", "predict_probabilities", "read_curve", "read_per_case", "read_summary", "read_times",
    "save_prediction", "sliding_window_overlap", "softmax_probabilities", "summarize", "summary_meta",
    "summary_report", "write_summary",
]
