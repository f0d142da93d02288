"""Write a randomly initialised trunk as an encoder file, the random baseline of an encoder no ``--encoder random``
spec builds: a trunk reading only some input channels (the L of Lab: colourisation's and CMC's), fed Lab.

    python tools/random_encoder.py --backbone resnet18 --channels 0 --input lab --seed 0 --out runs/random_l_s0.pt

Every evaluation reads the file as it reads a checkpoint's encoder (``--encoder runs/random_l_s0.pt``).
``--bn-from DIR [DIR ...]`` keeps the random weights but recomputes the batch-norm statistics on ``--bn-frames``
random frames of the videos under the folders (``--bn-size`` px): the random baseline with the statistics any short
training run gives its trunk for free, which separates what training learned from what it merely recalibrated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vidssl.models import ResNet, build_backbone
from vidssl.models.record import encoder_entries


@torch.no_grad()
def recalibrate(net: ResNet, videos: list[Path], frames: int, size: int, input: str, seed: int) -> None:
    """The batch-norm running statistics of ``net`` recomputed (cumulative averages) over ``frames`` random frames of
    the videos under ``videos``, normalised for ``input``; the weights are untouched."""
    from vidssl.data.augment import to_float
    from vidssl.data.datasets import RawVideoDataset
    from vidssl.data.samplers import random_clip
    from vidssl.data.views import FrameSampler
    from vidssl.nn.colour import normalize_input

    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over every batch below
    sampler = FrameSampler(random_clip, {"length": 1})
    dataset = RawVideoDataset([str(v) for v in videos], sampler, size=(size, size), seed=seed)
    net.train()
    seen, epoch = 0, 0
    while seen < frames:
        dataset.set_epoch(epoch)
        batch = torch.stack([dataset[i]["video"] for i in range(len(dataset))])[:, :, 0]  # (N, 3, S, S)
        for chunk in batch.split(32):
            net(normalize_input(to_float(chunk), input))  # type: ignore[arg-type]
            seen += len(chunk)
        epoch += 1
    net.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", help="a named trunk (vidssl.models.BACKBONES)")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="input channels it reads (0: L of Lab)")
    parser.add_argument("--input", default="rgb", choices=["rgb", "lab"], help="what evaluations feed it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bn-from", type=Path, nargs="+", default=None,
                        help="recompute batch-norm statistics on the videos under these folders")
    parser.add_argument("--bn-frames", type=int, default=512)
    parser.add_argument("--bn-size", type=int, default=112)
    args = parser.parse_args(argv)
    config = build_backbone(args.backbone).config
    torch.manual_seed(args.seed)  # after the throwaway build above: the weights of `--encoder random --seed S`
    net = ResNet.from_config({**config, "channels": tuple(args.channels)} if args.channels else config)
    if args.bn_from is not None:
        recalibrate(net, args.bn_from, args.bn_frames, args.bn_size, args.input, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**encoder_entries(net, args.input), "seed": args.seed}, args.out)
    print(f"{args.out}: a random {args.backbone} (seed {args.seed}, channels {args.channels or 'all'}) fed "
          f"{args.input}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
