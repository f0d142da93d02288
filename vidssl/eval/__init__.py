"""Evaluation: label propagation (DAVIS masks, JHMDB keypoints, VIP parts) with the official metrics, and the
still-image probes.

- ``propagate`` (one frame from its context) and ``propagate_sequence`` (a whole video, streaming):
  ``vidssl.eval.propagation``; MAST's memory: ``vidssl.eval.mast_memory``;
- ``MODES``, ``load_preset`` (a preset's ``mode:`` and its config) and ``propagate_video`` (the one driver of
  DAVIS and VIP): ``vidssl.eval.modes``;
- ``evaluate_encoder`` (propagate and score a DAVIS tree) and ``evaluate_davis`` (the official J&F of a
  results folder): ``vidssl.eval.davis``, ``vidssl.eval.davis_metrics``;
- ``build_encoder``: any ``--encoder`` spec as a frame encoder (``vidssl.eval.encoders``);
- ``knn_accuracy``, ``train_linear_probe``: ``vidssl.eval.probes``.
"""

from vidssl.eval.davis import evaluate_encoder
from vidssl.eval.davis_metrics import evaluate_davis
from vidssl.eval.encoders import FrameEncoder, build_encoder
from vidssl.eval.modes import MODES, load_preset, propagate_video
from vidssl.eval.probes import extract_features, knn_accuracy, linear_accuracy, train_linear_probe
from vidssl.eval.propagation import PropagationConfig, propagate, propagate_sequence

__all__ = [
    "MODES",
    "FrameEncoder",
    "PropagationConfig",
    "build_encoder",
    "evaluate_davis",
    "evaluate_encoder",
    "extract_features",
    "knn_accuracy",
    "linear_accuracy",
    "load_preset",
    "propagate",
    "propagate_sequence",
    "propagate_video",
    "train_linear_probe",
]
