"""Pure loss functions shared by methods, shapes in their docstrings; each has a closed-form test."""

from vidssl.losses.contrastive import info_nce, info_nce_logits, nt_xent, top1_positive
from vidssl.losses.cycle import cycle_loss, walk_loss
from vidssl.losses.regression import cosine_regression

__all__ = ["cosine_regression", "cycle_loss", "info_nce", "info_nce_logits", "nt_xent", "top1_positive", "walk_loss"]
