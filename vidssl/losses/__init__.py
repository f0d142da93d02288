"""Pure loss functions shared by methods, shapes in their docstrings; each has a closed-form test."""

from vidssl.losses.clustering import iic_loss, self_label, sinkhorn, swapped_prediction
from vidssl.losses.contrastive import (
    amdim_nce,
    batch_hard_triplet,
    batch_info_nce,
    cpc_loss,
    dense_info_nce,
    dim_loss,
    global_local_scores,
    info_nce,
    info_nce_logits,
    nce,
    nt_xent,
    proto_nce,
    supcon,
    top1_positive,
)
from vidssl.losses.cycle import cycle_loss, walk_loss
from vidssl.losses.decorrelation import barlow_twins_loss, off_diagonal, vicreg_loss
from vidssl.losses.regression import cosine_regression, negative_cosine

__all__ = [
    "amdim_nce",
    "barlow_twins_loss",
    "batch_hard_triplet",
    "batch_info_nce",
    "cosine_regression",
    "cpc_loss",
    "cycle_loss",
    "dense_info_nce",
    "dim_loss",
    "global_local_scores",
    "iic_loss",
    "info_nce",
    "info_nce_logits",
    "nce",
    "negative_cosine",
    "nt_xent",
    "off_diagonal",
    "proto_nce",
    "self_label",
    "sinkhorn",
    "supcon",
    "swapped_prediction",
    "top1_positive",
    "vicreg_loss",
    "walk_loss",
]
