"""The video data layer: exact readers, datasets, samplers and views (see ``docs/architecture.md``).

``open_video(path)`` gives a reader whose ``get(indices)`` returns exact uint8 RGB frames; every reading
failure is a ``VideoError`` naming the file.
"""

from vidssl.data.datasets import ImageFolderDataset, RawVideoDataset, build_dataset
from vidssl.data.errors import VideoError
from vidssl.data.video import VideoReader, open_video
from vidssl.data.views import FrameSampler, MultiCrop, Sampler, ShotFrames, StillFrame, TwoViews, VideoInfo

__all__ = [
    "FrameSampler",
    "ImageFolderDataset",
    "MultiCrop",
    "RawVideoDataset",
    "Sampler",
    "ShotFrames",
    "StillFrame",
    "TwoViews",
    "VideoError",
    "VideoInfo",
    "VideoReader",
    "build_dataset",
    "open_video",
]
