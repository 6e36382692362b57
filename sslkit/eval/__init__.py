"""Evaluation of the learned representation: weighted kNN, the online linear probe, and
the offline linear evaluation of `sslkit-eval`."""

from sslkit.eval.evaluation import Evaluation, held_out
from sslkit.eval.features import extract, labelled
from sslkit.eval.knn import KNN, knn_scores, topk_accuracy
from sslkit.eval.probe import LinearProbe, OnlineProbe, fit_linear

__all__ = ["Evaluation", "KNN", "LinearProbe", "OnlineProbe", "extract", "fit_linear", "held_out", "knn_scores",
           "labelled", "topk_accuracy"]
