"""Shared building blocks of methods and evaluation alike; imports neither (only ``vidssl.engine.distributed``
for collectives).

heads (projection / prediction MLPs, prototypes, a backbone with its head, the collapse monitors), momentum (EMA
and its schedule, ``Queue``, ``MemoryBank``), norm (``SplitBatchNorm``), local_attention (the one local-window
copy), geometry (affine crops, Procrustes), colour (Lab, the input normalisations, ab quantisation and k-means).
"""

from vidssl.nn.heads import Branch, PairwiseHead, Prototypes, WeightNormLinear, embedding_std, key_gaps, mlp
from vidssl.nn.momentum import MemoryBank, Queue, ema_update_, momentum_at
from vidssl.nn.norm import SplitBatchNorm, convert_split_bn

__all__ = [
    "Branch",
    "MemoryBank",
    "PairwiseHead",
    "Prototypes",
    "Queue",
    "SplitBatchNorm",
    "WeightNormLinear",
    "convert_split_bn",
    "ema_update_",
    "embedding_std",
    "key_gaps",
    "mlp",
    "momentum_at",
]
