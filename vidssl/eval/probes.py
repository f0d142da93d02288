"""Still-image probes of a frozen encoder: weighted kNN and a linear classifier on pooled features.

- kNN as in InstDisc (Wu et al. 2018, https://arxiv.org/abs/1805.01978) and lightly's benchmarks: cosine
  similarity to every training feature, the k = 200 most similar vote for their class with weight
  ``exp(sim / 0.1)``, the class with the largest summed weight wins.
- Linear probe: a single ``nn.Linear`` trained on frozen, standardised features with Adam (offline: the
  trunk runs once, in eval mode and without gradients, so neither its weights nor its BN statistics move; a
  popular SimCLR CIFAR figure came from a probe that fine-tuned the trunk). Its learning rate and weight decay
  are chosen on a stratified validation split of train; the test split is scored once.

Data is an ImageFolder tree read with PIL (``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, the CIFAR
layout of the shared data). ``vidssl eval knn --encoder CKPT --data ROOT`` runs both from the shell, feeding
the encoder the input its checkpoint records (Lab for MAST).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import to_float
from vidssl.data.errors import VideoError
from vidssl.data.images import load_image_folder
from vidssl.models import EncoderRecord, build_image_backbone, load_record
from vidssl.nn.colour import INPUT_SPACES, InputSpace, normalize_input

HELP = "kNN (and optionally linear) probe of an encoder on an ImageFolder train/test split, e.g. CIFAR-10"


# -------------------------------------------------------------------------------------------------------- kNN


def knn_scores(
    features: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 200, temperature: float = 0.1
) -> Tensor:
    """Weighted kNN class scores.

    Args:
        features: ``(B, D)`` queries; bank: ``(N, D)`` training features (both L2-normalised here).
        bank_labels: ``(N,)`` long class indices in ``[0, num_classes)``.
        k: neighbours (clamped to N); temperature: votes weigh ``exp(cos / temperature)``.
    Returns:
        ``(B, num_classes)`` summed vote weights.
    """
    if features.dim() != 2 or bank.dim() != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(f"knn: features (B, D) and bank (N, D) must agree, got {tuple(features.shape)}, "
                         f"{tuple(bank.shape)}")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"knn: bank_labels must be ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    sim = F.normalize(features, dim=1) @ F.normalize(bank, dim=1).t()  # (B, N) cosine similarity
    top, idx = sim.topk(min(k, bank.shape[0]), dim=1)  # (B, k)
    weights = (top / temperature).exp()
    scores = torch.zeros(features.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    return scores.scatter_add_(1, bank_labels[idx], weights)


def knn_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
    k: int = 200, temperature: float = 0.1, chunk: int = 1024,
) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_scores` over ``(M, D)`` test features, ``chunk`` rows at a time."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, test_features.shape[0], chunk):
        scores = knn_scores(test_features[start:start + chunk], train_features, train_labels, num_classes, k,
                            temperature)
        correct += int((scores.argmax(dim=1) == test_labels[start:start + chunk]).sum())
    return correct / test_features.shape[0]


# -------------------------------------------------------------------------------------------------------- linear


@dataclass
class LinearProbe:
    """A trained linear classifier on standardised features: ``logits = fc((x - mean) / std)``."""

    fc: nn.Linear
    mean: Tensor  # (D,)
    std: Tensor  # (D,)

    def __call__(self, features: Tensor) -> Tensor:
        """``(B, D)`` -> ``(B, num_classes)`` logits."""
        return self.fc((features - self.mean) / self.std)


def train_linear_probe(
    features: Tensor, labels: Tensor, *, epochs: int = 100, lr: float = 1e-3, batch_size: int = 256,
    weight_decay: float = 0.0, seed: int = 0,
) -> LinearProbe:
    """Fit ``nn.Linear(D, C)`` with Adam and cross-entropy on frozen ``(N, D)`` features, ``(N,)`` labels.

    Features are standardised with the training mean and std, so one learning rate suits any encoder.
    Deterministic given ``seed`` (its own generator for initialisation and shuffling).
    """
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"linear probe: need (N, D) features and (N,) labels, got {tuple(features.shape)}, "
                         f"{tuple(labels.shape)}")
    features = features.detach().float()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    g = torch.Generator().manual_seed(seed)
    fc = nn.Linear(x.shape[1], int(labels.max()) + 1).to(x.device)
    with torch.no_grad():  # nn.Linear's default init, drawn from our generator
        bound = 1.0 / x.shape[1] ** 0.5
        fc.weight.copy_(torch.empty_like(fc.weight, device="cpu").uniform_(-bound, bound, generator=g))
        fc.bias.copy_(torch.empty_like(fc.bias, device="cpu").uniform_(-bound, bound, generator=g))
    opt = torch.optim.Adam(fc.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=g).to(x.device).split(batch_size):
            loss = F.cross_entropy(fc(x[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return LinearProbe(fc.eval().requires_grad_(False), mean, std)


def validation_split(labels: Tensor, fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train_index, val_index)``: ``fraction`` of every class, drawn with ``seed``, held out of the training
    split (stratified, at least one sample of a class with two or more), for choosing probe settings."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split: fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels.cpu() == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        n_val = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def select_linear_probe(
    features: Tensor, labels: Tensor, *, lrs: tuple[float, ...] = (1e-3, 1e-2), weight_decays: tuple[float, ...] = (
        0.0, 1e-4), epochs: int = 100, batch_size: int = 256, val_fraction: float = 0.1, seed: int = 0,
) -> tuple[LinearProbe, dict[str, float], dict[str, float]]:
    """The offline linear protocol: every (lr, weight decay) of the grid trained on the training split less a
    stratified validation split (:func:`validation_split`) and scored on it; the best setting (ties: the first)
    retrained on the whole training split. Returns ``(probe, chosen {"lr", "weight_decay"}, validation top-1 per
    setting)``; the test split is never seen here, so the caller reports it once."""
    tr, va = validation_split(labels, val_fraction, seed)
    scores: dict[str, float] = {}
    best: tuple[float, float, float] | None = None
    for lr in lrs:
        for wd in weight_decays:
            probe = train_linear_probe(features[tr], labels[tr], epochs=epochs, lr=lr, batch_size=batch_size,
                                       weight_decay=wd, seed=seed)
            acc = linear_accuracy(probe, features[va], labels[va])
            scores[f"lr={lr:g},wd={wd:g}"] = acc
            if best is None or acc > best[0]:
                best = (acc, lr, wd)
    assert best is not None
    chosen = {"lr": best[1], "weight_decay": best[2]}
    final = train_linear_probe(features, labels, epochs=epochs, lr=best[1], batch_size=batch_size,
                               weight_decay=best[2], seed=seed)
    return final, chosen, scores


def linear_accuracy(probe: LinearProbe, features: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``probe`` on ``(M, D)`` features."""
    with torch.no_grad():
        return float((probe(features.float()).argmax(1) == labels).float().mean())


# -------------------------------------------------------------------------------------------------------- data


def read_image_folder(root: str | Path, size: int | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """Every image of ``root/<class>/*`` as uint8 ``(N, 3, H, W)``, labels ``(N,)`` and the sorted class names
    (``vidssl.data.images.load_image_folder``); an unreadable image is a ``ValueError`` naming it."""
    try:
        return load_image_folder(root, size)
    except VideoError as exc:
        raise ValueError(str(exc)) from exc


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: Tensor, batch_size: int = 256, device: torch.device | str = "cpu",
    input: InputSpace = "rgb", pool: int = 1, patches: tuple[int, int] | None = None,
) -> Tensor:
    """Pooled features ``(N, D)`` (float32, on ``device``) of uint8 ``(N, 3, H, W)`` images, normalised as the
    encoder was trained (``input``: ImageNet RGB or MAST Lab), with the encoder in eval mode.

    ``pool``: the feature map average-pooled to a ``pool x pool`` grid and flattened (``D = C pool^2``; 1 is the
    global average, the encoder's own ``forward``): the evaluation of an earlier block keeps some layout this way,
    as the pretext-task benchmarks pool each layer to a few thousand dimensions.

    ``patches=(p, s)``: the image as the grid of ``p`` px patches at stride ``s`` that a patch encoder trained on
    (CPC, CPC v2, Greedy InfoMax), each patch embedded on its own and the embeddings averaged over the grid: the
    CPC papers' evaluation of the patch encoder, instead of the whole image through a trunk that saw patches.
    """
    if pool < 1:
        raise ValueError(f"extract_features: pool must be at least 1, got {pool}")
    if patches is not None:
        p, stride = patches
        h, w = images.shape[-2:]
        if p < 1 or stride < 1 or p > min(h, w) or (h - p) % stride or (w - p) % stride:
            raise ValueError(f"extract_features: patches of {p} px at stride {stride} do not tile {h}x{w} images")
    encoder = encoder.eval().to(device)

    def embed_whole(x: Tensor) -> Tensor:
        if pool == 1:
            return encoder(x)
        features: Tensor = encoder.forward_features(x)  # type: ignore[operator]  # every trunk has it
        return F.adaptive_avg_pool2d(features, pool).flatten(1)

    def embed(x: Tensor) -> Tensor:
        if patches is None:
            return embed_whole(x)
        p, stride = patches
        n, c = x.shape[:2]
        grid = F.unfold(x, p, stride=stride)  # (N, C p p, G)
        tiles = grid.transpose(1, 2).reshape(-1, c, p, p)  # (N G, C, p, p)
        return embed_whole(tiles).view(n, grid.shape[-1], -1).mean(dim=1)

    out = [embed(normalize_input(to_float(chunk.to(device)), input)).float() for chunk in images.split(batch_size)]
    return torch.cat(out)


def load_encoder(checkpoint: str | Path | None, backbone: str = "resnet18_cifar") -> nn.Module:
    """The trunk of a vidssl checkpoint (its own architecture), a torchvision state dict loaded into
    ``backbone``, or a random ``backbone`` when ``checkpoint`` is None."""
    if checkpoint is None:
        return build_image_backbone(backbone)
    return load_record(str(checkpoint), backbone=backbone).backbone


# -------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", "--checkpoint", dest="encoder", default="random",
                        help="vidssl checkpoint, torchvision state dict (see --backbone) or random (the default: the "
                             "random-initialisation baseline)")
    parser.add_argument("--data", type=Path, required=True, help="folder with train/<class>/ and test/<class>/")
    parser.add_argument("--backbone", default="resnet18_cifar", help="architecture for plain state dicts / random")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of --encoder random")
    parser.add_argument("--input", default="auto", choices=["auto", *INPUT_SPACES],
                        help="what the encoder is fed: auto = what a checkpoint trained on (Lab for MAST), else RGB")
    parser.add_argument("--layers", type=int, choices=[1, 2, 3, 4], default=None,
                        help="residual stages to read (RotNet transfers best from block 2); default: all")
    parser.add_argument("--pool", type=int, default=1,
                        help="average-pool the feature map to a pool x pool grid before flattening (default 1: global)")
    parser.add_argument("--patches", type=int, nargs=2, default=None, metavar=("P", "S"),
                        help="embed the grid of P px patches at stride S and average (a patch encoder's evaluation: "
                             "CPC, CPC v2, Greedy InfoMax; the CIFAR configs' 8 4)")
    parser.add_argument("--k", type=int, default=200, help="neighbours (InstDisc / lightly: 200)")
    parser.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(sim / t) (0.1)")
    parser.add_argument("--size", type=int, default=None, help="resize and centre-crop images to this size")
    parser.add_argument("--linear", action="store_true", help="also train and report a linear probe")
    parser.add_argument("--epochs", type=int, default=100, help="linear probe epochs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    try:
        record: EncoderRecord = load_record(args.encoder, backbone=args.backbone, seed=args.seed, input=args.input,
                                            layers=args.layers)
        x_train, y_train, classes = read_image_folder(args.data / "train", args.size)
        x_test, y_test, test_classes = read_image_folder(args.data / "test", args.size)
    except (OSError, ValueError) as exc:
        print(f"vidssl eval knn: {exc}", file=sys.stderr)
        return 1
    if test_classes != classes:
        print(f"vidssl eval knn: {args.data}: train and test class folders differ", file=sys.stderr)
        return 1
    y_train, y_test = y_train.to(args.device), y_test.to(args.device)
    try:
        grid = tuple(args.patches) if args.patches is not None else None
        f_train = extract_features(record.backbone, x_train, args.batch_size, args.device, record.input, args.pool,
                                   grid)
        f_test = extract_features(record.backbone, x_test, args.batch_size, args.device, record.input, args.pool, grid)
    except ValueError as exc:
        print(f"vidssl eval knn: {exc}", file=sys.stderr)
        return 1
    results = {"knn_top1": knn_accuracy(f_train, y_train, f_test, y_test, args.k, args.temperature),
               "k": args.k, "temperature": args.temperature, "train": len(y_train), "test": len(y_test),
               "encoder": args.encoder, "input": record.input, "layers": args.layers, "pool": args.pool,
               "patches": args.patches,
               "dim": int(f_train.shape[1])}
    print(f"kNN top-1 (weighted, cosine, k={args.k}, t={args.temperature}): {100 * results['knn_top1']:.2f}%  "
          f"({len(y_train)} train, {len(y_test)} test images, {len(classes)} classes; {record.name} fed "
          f"{record.input})")
    if args.linear:
        probe, chosen, val = select_linear_probe(f_train, y_train, epochs=args.epochs, batch_size=args.batch_size)
        results["linear_top1"] = linear_accuracy(probe, f_test, y_test)
        results["linear_chosen"], results["linear_validation"] = chosen, val
        print(f"linear top-1 (offline, frozen trunk, {args.epochs} epochs; lr {chosen['lr']:g} and weight decay "
              f"{chosen['weight_decay']:g} chosen on a 10% validation split of train): "
              f"{100 * results['linear_top1']:.2f}%")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0
