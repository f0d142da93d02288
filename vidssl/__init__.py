"""vidssl: self-supervised learning from raw video and visual correspondence."""

__version__ = "0.1.0"
