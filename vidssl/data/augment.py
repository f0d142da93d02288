"""Batched, clip-consistent augmentation on ``(B, C, T, H, W)`` float clips, the one resize to a training size,
and CRW's patch grid (colour spaces and normalisation: :mod:`vidssl.nn.colour`).

Everything here is a batched tensor op (kornia / ``grid_sample``), so it runs wherever the batch lives: on
the GPU after the batch is moved there, or on CPU in a data-loader worker.

Randomness. All random parameters are drawn with ``torch`` from the ``generator`` passed in (or the global
RNG when it is ``None``, so ``torch.manual_seed`` makes a run repeatable). They are drawn on the generator's
device (CPU by default) and only then moved to the clip's device, so one seed gives the same crops, flips
and jitter factors for a batch on CPU and on GPU. kornia's own augmentation modules take no generator,
which is why the parameters are sampled here and only kornia's functional ops are used to apply them.
Clip consistency folds T into the batch and repeats each clip's parameters over its frames (faster on a CPU
than ``kornia.augmentation.VideoSequential``, which also draws from the global RNG only: ``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ClipAugment",
    "ClipParams",
    "adjust_hue",
    "byol_augment",
    "crop_flip",
    "dino_local_augment",
    "jigsaw_tiles",
    "moco_v1_augment",
    "moco_v2_augment",
    "normalize_tiles",
    "pad_crop",
    "patch_grid",
    "random_affine",
    "remove_chroma",
    "resize_clip",
    "simclr_augment",
    "to_float",
]

Size2 = tuple[int, int]
Range = tuple[float, float]


# --------------------------------------------------------------------------------------------------------
# Layout checks and dtype
# --------------------------------------------------------------------------------------------------------


def _check_clip(x: Tensor, where: str, channels: tuple[int, ...] = (1, 3)) -> None:
    """Raise a clear error unless ``x`` is a float clip ``(B, C, T, H, W)`` with C in ``channels``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor clip (B, C, T, H, W), got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"{where}: expected a clip of layout (B, C, T, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in channels:
        raise ValueError(
            f"{where}: expected C in {channels} at dim 1 of (B, C, T, H, W), got shape {tuple(x.shape)}; "
            "is the clip channels-last (B, T, H, W, C)?"
        )
    if not x.is_floating_point():
        raise TypeError(f"{where}: expected a float clip in [0, 1], got {x.dtype}; convert with to_float()")


def to_float(clip: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 ``(B, C, T, H, W)`` (or any uint8 layout) -> float in [0, 1] of ``dtype``, same shape and device."""
    if not isinstance(clip, Tensor) or clip.dtype != torch.uint8:
        got = clip.dtype if isinstance(clip, Tensor) else type(clip).__name__
        raise TypeError(f"to_float: expected a uint8 tensor as delivered by the datasets, got {got}")
    return clip.to(dtype).div_(255.0)


def resize_clip(clip: Tensor, size: int | Size2, antialias: bool = False) -> Tensor:
    """Squash every frame of a float clip ``(B, C, T, H, W)`` in [0, 1] to ``size`` (the whole frame, aspect
    not kept, as MAST's and CorrFlow's loaders resize to 256x256): bilinear, clamped to [0, 1]. ``antialias``
    low-pass filters when shrinking (CorrFlow's ``cv2.resize`` stand-in). A clip already at ``size`` is
    returned as is. The one resize to a method's training size."""
    _check_clip(clip, "resize_clip")
    h, w = (size, size) if isinstance(size, int) else size
    if clip.shape[-2:] == (h, w):
        return clip
    b, c, t = clip.shape[:3]
    flat = clip.transpose(1, 2).reshape(b * t, c, *clip.shape[-2:])
    flat = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
    return flat.clamp(0, 1).view(b, t, c, h, w).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------
# Geometry: random resized crop boxes and one warp for crop + flip + resize
# --------------------------------------------------------------------------------------------------------


def centre_crop_clip(clip: Tensor, size: int) -> Tensor:
    """The un-augmented view of a float clip ``(B, C, T, H, W)``: its centre square (the short side), resized to
    ``size`` x ``size`` (torchvision's ``Resize`` + ``CenterCrop`` of an evaluation transform, in one step).
    The clustering methods' passes over the dataset use it (DeepCluster's ``compute_features``, SeLa's labels)."""
    _check_clip(clip, "centre_crop_clip")
    h, w = clip.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize_clip(clip[..., top:top + s, left:left + s], size, antialias=s > size)


def _uniform(n: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64) * (hi - lo) + lo


def _sample_boxes(
    n: int,
    height: int,
    width: int,
    scale: Range,
    ratio: Range,
    generator: torch.Generator | None,
    attempts: int = 10,
) -> Tensor:
    """torchvision's RandomResizedCrop box sampler, vectorised: ``(n, 4)`` integer ``(x0, y0, w, h)``.

    Ten tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)); the first that fits is kept, else the
    centred crop of the clamped aspect ratio. Always consumes the same amount of randomness.
    """
    area = height * width
    target = area * _uniform((n, attempts), scale[0], scale[1], generator)
    aspect = torch.exp(_uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first valid try
    w = w.gather(1, first)[:, 0]
    h = h.gather(1, first)[:, 0]
    u = _uniform((n, 2), 0.0, 1.0, generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1))
    y0 = torch.floor(u[:, 1] * (height - h + 1))

    # Fallback as torchvision: centred crop, aspect clamped into `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    bad = ~ok.any(dim=1)
    w = torch.where(bad, float(fw), w)
    h = torch.where(bad, float(fh), h)
    x0 = torch.where(bad, float((width - fw) // 2), x0)
    y0 = torch.where(bad, float((height - fh) // 2), y0)
    return torch.stack([x0, y0, w, h], dim=1)


def _axis_grid(start: Tensor, length: Tensor, out: int, full: int, flip: Tensor | None) -> Tensor:
    """Normalised sample positions ``(n, out)`` along one axis for crop [start, start+length) -> ``out`` px.

    Same source positions as ``F.interpolate(crop, mode="bilinear", align_corners=False)`` (half-pixel
    centres, clamped to the crop's first/last pixel), so a crop never reads pixels outside its box.
    """
    j = torch.arange(out, device=start.device, dtype=start.dtype)
    src = (j + 0.5) * (length[:, None] / out) - 0.5  # pixel-index coordinates inside the crop
    src = torch.minimum(src.clamp(min=0.0), length[:, None] - 1)
    if flip is not None:
        src = torch.where(flip[:, None], src.flip(1), src)
    return (2.0 * (start[:, None] + src) + 1.0) / full - 1.0  # grid_sample, align_corners=False


def _resized_crop(x: Tensor, boxes: Tensor, size: Size2, flip: Tensor | None = None) -> Tensor:
    """Cut K boxes per image out of ``x`` ``(M, C, H, W)``, optionally mirror them, resize to ``size``.

    ``boxes`` ``(M, K, 4)`` = ``(x0, y0, w, h)`` in pixels, ``flip`` ``(M, K)`` bool. One bilinear
    ``grid_sample`` for everything (no antialiasing, like kornia's ``crop_and_resize``); returns
    ``(M, C, K, *size)``.
    """
    m, c, height, width = x.shape
    k = boxes.shape[1]
    flat = boxes.reshape(m * k, 4).to(device=x.device, dtype=x.dtype)
    fl = flip.reshape(m * k).to(x.device) if flip is not None else None
    gx = _axis_grid(flat[:, 0], flat[:, 2], size[1], width, fl)  # (M*K, w)
    gy = _axis_grid(flat[:, 1], flat[:, 3], size[0], height, None)  # (M*K, h)
    shape = (m * k, size[0], size[1])
    grid = torch.stack([gx[:, None, :].expand(shape), gy[:, :, None].expand(shape)], dim=-1)
    # the K crops of an image are stacked along the grid's height: (M, K*h, w, 2)
    out = F.grid_sample(
        x, grid.view(m, k * size[0], size[1], 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.view(m, c, k, size[0], size[1])


# --------------------------------------------------------------------------------------------------------
# ClipAugment
# --------------------------------------------------------------------------------------------------------


@dataclass
class ClipParams:
    """Random parameters of one :class:`ClipAugment` call, one row per frame (``B * T``, clip-major).

    In clip-consistent mode the T rows of a clip are equal. ``boxes`` are ``(x0, y0, w, h)`` in input
    pixels; ``jitter`` holds the (brightness, contrast, saturation, hue) factors; ``order`` the order in
    which the four jitter steps run (torchvision draws one per image); ``blur_sigma`` is 0 where no blur.
    """

    boxes: Tensor  # (B*T, 4) float64
    flip: Tensor  # (B*T,) bool
    jitter_on: Tensor  # (B*T,) bool
    jitter: Tensor  # (B*T, 4) float64
    order: Tensor  # (B*T, 4) long, a permutation of 0..3
    gray: Tensor  # (B*T,) bool
    blur_sigma: Tensor  # (B*T,) float64
    solarize: Tensor  # (B*T,) bool


def _jitter_range(value: float, centre: float, name: str) -> Range:
    if value < 0:
        raise ValueError(f"ClipAugment: color_jitter {name} must be >= 0, got {value}")
    return (max(0.0, centre - value), centre + value) if centre else (-value, value)


class ClipAugment(nn.Module):
    """Random resized crop, horizontal flip, colour jitter, grayscale, blur and solarisation on ``(B, C, T, H, W)``
    clips, in that order.

    ``per_frame=False`` draws one set of parameters per clip and applies it to all T frames (identical
    frames stay identical); ``per_frame=True`` draws independent parameters for every frame. Colour jitter
    follows torchvision's ``ColorJitter`` (factors, clamping, a random order of the four steps per image);
    grayscale uses the ITU-R 601 luma weights as torchvision; blur is Gaussian with sigma ~ U(blur_sigma),
    kernel 2*ceil(3*sigma_max)+1; solarisation maps ``x >= 0.5`` to ``1 - x`` (PIL's ``ImageOps.solarize`` at
    128, BYOL's second view). Input float in [0, 1]; output ``(B, C, T, *size)`` of the same dtype and
    device. Resizing is bilinear without antialiasing. Randomness: see the module docstring.
    """

    def __init__(
        self,
        *,
        size: int | Size2,
        scale: Range = (0.08, 1.0),
        ratio: Range = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        color_jitter: tuple[float, float, float, float] | None = None,
        jitter_p: float = 0.8,
        grayscale_p: float = 0.0,
        blur_p: float = 0.0,
        blur_sigma: Range = (0.1, 2.0),
        solarize_p: float = 0.0,
        per_frame: bool = False,
    ) -> None:
        super().__init__()
        self.size: Size2 = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) <= 0:
            raise ValueError(f"ClipAugment: size must be positive, got {size}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"ClipAugment: scale must satisfy 0 < lo <= hi, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ClipAugment: ratio must satisfy 0 < lo <= hi, got {ratio}")
        for name, p in (("hflip", hflip), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p), ("blur_p", blur_p),
                        ("solarize_p", solarize_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"ClipAugment: {name} is a probability in [0, 1], got {p}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"ClipAugment: blur_sigma must satisfy 0 < lo <= hi, got {blur_sigma}")
        self.scale, self.ratio, self.hflip = scale, ratio, hflip
        cj = color_jitter if color_jitter is not None else (0.0, 0.0, 0.0, 0.0)
        if len(cj) != 4:
            raise ValueError(f"ClipAugment: color_jitter is (brightness, contrast, saturation, hue), got {cj}")
        if cj[3] > 0.5:
            raise ValueError(f"ClipAugment: hue jitter must be in [0, 0.5], got {cj[3]}")
        self.color_jitter = tuple(float(v) for v in cj)
        self.jitter_ranges = [
            _jitter_range(v, c, n)
            for v, c, n in zip(
                self.color_jitter, (1.0, 1.0, 1.0, 0.0), ("brightness", "contrast", "saturation", "hue"), strict=True
            )
        ]
        self.jitter_p = jitter_p if any(self.color_jitter) else 0.0
        self.grayscale_p, self.blur_p, self.blur_sigma = grayscale_p, blur_p, blur_sigma
        self.solarize_p = solarize_p
        self.per_frame = per_frame

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
            f"color_jitter={self.color_jitter}, jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p}, "
            f"blur_p={self.blur_p}, blur_sigma={self.blur_sigma}, solarize_p={self.solarize_p}, "
            f"per_frame={self.per_frame}"
        )

    def sample_params(
        self, batch: int, frames: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> ClipParams:
        """Draw the parameters for a ``(batch, C, frames, height, width)`` clip batch (see :class:`ClipParams`)."""
        n = batch * frames if self.per_frame else batch
        boxes = _sample_boxes(n, height, width, self.scale, self.ratio, generator)
        u = _uniform((n, 4), 0.0, 1.0, generator)  # flip, jitter, gray and blur coins
        factors = torch.stack([_uniform((n,), lo, hi, generator) for lo, hi in self.jitter_ranges], dim=1)
        order = _uniform((n, 4), 0.0, 1.0, generator).argsort(dim=1)  # a uniform random permutation
        sigma = _uniform((n,), self.blur_sigma[0], self.blur_sigma[1], generator)
        # drawn last and only when used, so augmentations without it keep their random stream
        solarize = (_uniform((n,), 0.0, 1.0, generator) < self.solarize_p if self.solarize_p > 0
                    else torch.zeros(n, dtype=torch.bool))
        params = ClipParams(
            boxes=boxes,
            flip=u[:, 0] < self.hflip,
            jitter_on=u[:, 1] < self.jitter_p,
            jitter=factors,
            order=order,
            gray=u[:, 2] < self.grayscale_p,
            blur_sigma=torch.where(u[:, 3] < self.blur_p, sigma, 0.0),
            solarize=solarize,
        )
        if not self.per_frame:  # the same parameters on all T frames of a clip
            params = ClipParams(*(t.repeat_interleave(frames, dim=0) for t in vars(params).values()))
        return params

    def forward(self, clip: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, C, T, H, W)`` float in [0, 1] -> ``(B, C, T, *size)``."""
        _check_clip(clip, "ClipAugment")
        b, _, t, h, w = clip.shape
        return self.apply_params(clip, self.sample_params(b, t, h, w, generator))

    def apply_params(self, clip: Tensor, params: ClipParams) -> Tensor:
        """Apply drawn parameters to ``(B, C, T, H, W)`` -> ``(B, C, T, *size)``.

        Lets a caller reuse one draw, e.g. the same crop and flip on a clip and its C=1 soft masks (params
        without colour ops), or read the boxes back. Runs in the clip's dtype also under autocast (``optim.amp``):
        augmentation prepares the input, it is not the model's arithmetic.
        """
        with torch.autocast(clip.device.type, enabled=False):
            return self._apply_params(clip, params)

    def _apply_params(self, clip: Tensor, params: ClipParams) -> Tensor:
        _check_clip(clip, "ClipAugment")
        b, c, t, h, w = clip.shape
        if params.boxes.shape[0] != b * t:
            raise ValueError(
                f"ClipAugment.apply_params: params are for {params.boxes.shape[0]} frames, clip has {b * t}"
            )
        device = clip.device
        frames = clip.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # fold T into the batch
        x = _resized_crop(frames, params.boxes[:, None], self.size, params.flip[:, None])[:, :, 0]
        colour = bool(params.jitter_on.any() or params.gray.any())
        if colour and c != 3:
            raise ValueError(f"ClipAugment: colour jitter and grayscale need C=3, got shape {tuple(clip.shape)}")

        if params.jitter_on.any():
            x = _color_jitter(x, params, self.color_jitter)
        gray = params.gray.to(device)
        if gray.any():
            x[gray] = kornia.color.rgb_to_grayscale(x[gray]).expand(-1, 3, -1, -1)
        blur = (params.blur_sigma > 0).to(device)
        if blur.any():
            k = 2 * math.ceil(3 * self.blur_sigma[1]) + 1
            k = min(k, 2 * ((min(self.size) - 1) // 2) + 1)  # reflect padding needs the kernel inside the image
            if k > 1:
                sigma = params.blur_sigma.to(device=device, dtype=x.dtype)[blur][:, None].expand(-1, 2)
                x[blur] = kornia.filters.gaussian_blur2d(x[blur], (k, k), sigma, border_type="reflect")
        solar = params.solarize.to(device)
        if solar.any():
            x[solar] = torch.where(x[solar] >= 0.5, 1.0 - x[solar], x[solar])
        return x.reshape(b, t, c, *self.size).permute(0, 2, 1, 3, 4)


def adjust_hue(img: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue of RGB ``(N, 3, H, W)`` in [0, 1] by ``factor`` ``(N,)`` turns (torchvision's hue factor).

    The same HSV hue rotation as ``kornia.enhance.adjust_hue`` / torchvision (value and saturation kept),
    written directly on RGB: about 2.5x faster on CPU than the HSV round trip, which dominated the jitter.
    """
    maxc, _ = img.max(dim=1)
    minc, _ = img.min(dim=1)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))  # grey pixels: any hue, chroma 0
    r, g, b = img.unbind(dim=1)
    hue = torch.where(  # hue in sextants [0, 6)
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = (hue + 6 * factor.view(-1, 1, 1)) % 6
    # HSV -> RGB: channel n in (R, G, B) = v - c * clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6, n = 5, 3, 1
    k = (torch.tensor([5.0, 3.0, 1.0], device=img.device, dtype=img.dtype).view(1, 3, 1, 1) + hue[:, None]) % 6
    return maxc[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0.0, 1.0)


def _color_jitter(x: Tensor, params: ClipParams, strengths: tuple[float, ...]) -> Tensor:
    """torchvision ColorJitter on the frames with ``jitter_on``: four steps in a per-frame random order.

    For each of the 4 positions and each step, the step runs on the frames that have it at that position:
    16 masked calls, but every frame is processed by each step once.
    """
    device = x.device
    on = params.jitter_on.to(device)
    order = params.order.to(device)
    factors = params.jitter.to(device=device, dtype=x.dtype)
    steps = (
        kornia.enhance.adjust_brightness_accumulative,
        kornia.enhance.adjust_contrast_with_mean_subtraction,
        kornia.enhance.adjust_saturation_with_gray_subtraction,
        adjust_hue,
    )
    x = x.clamp(0.0, 1.0)  # also a copy, so the masked writes below never touch the caller's tensor
    for pos in range(4):
        for step, fn in enumerate(steps):
            if strengths[step] == 0:
                continue
            sel = on & (order[:, pos] == step)
            if sel.any():
                x[sel] = fn(x[sel], factors[sel, step])  # each step returns values in [0, 1]
    return x


def moco_v2_augment(size: int | Size2, scale: Range = (0.2, 1.0), blur_p: float = 0.5) -> ClipAugment:
    """MoCo v2 / SimCLR augmentation: RandomResizedCrop(0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
    grayscale p=0.2, Gaussian blur sigma in [0.1, 2] p=0.5, horizontal flip p=0.5 (He et al. / Chen et al.).
    The CIFAR recipes crop from (0.08, 1) and drop the blur at 32 px (``blur_p=0``)."""
    return ClipAugment(
        size=size,
        scale=scale,
        color_jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=blur_p,
        blur_sigma=(0.1, 2.0),
        hflip=0.5,
    )


def simclr_augment(
    size: int | Size2, scale: Range = (0.08, 1.0), strength: float = 1.0, blur_p: float = 0.5
) -> ClipAugment:
    """SimCLR's augmentation (Chen et al. 2020, appendix A; solo-learn's ``symmetric``): RandomResizedCrop
    (0.08, 1), flip 0.5, colour jitter ``(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with p 0.8, grayscale p 0.2, Gaussian
    blur sigma in [0.1, 2] with ``blur_p`` (0.5; the CIFAR recipes drop it at 32 px: ``blur_p=0``)."""
    return ClipAugment(size=size, scale=scale, color_jitter=(0.8 * strength, 0.8 * strength, 0.8 * strength,
                                                             min(0.5, 0.2 * strength)),
                       jitter_p=0.8, grayscale_p=0.2, blur_p=blur_p, blur_sigma=(0.1, 2.0), hflip=0.5)


def byol_augment(size: int | Size2, view: int, scale: Range = (0.08, 1.0), blur: bool = True) -> ClipAugment:
    """BYOL's asymmetric pair (Grill et al. 2020, table 6; solo-learn's ``asymmetric``): both views crop (0.08, 1),
    flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2; blur p 1.0 on view 1 and 0.1 on view 2,
    solarisation p 0 on view 1 and 0.2 on view 2. ``blur=False`` drops the blur (32 px CIFAR crops)."""
    if view not in (1, 2):
        raise ValueError(f"byol_augment: view is 1 or 2, got {view}")
    return ClipAugment(size=size, scale=scale, color_jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2,
                       blur_p=(1.0 if view == 1 else 0.1) if blur else 0.0, blur_sigma=(0.1, 2.0),
                       solarize_p=0.0 if view == 1 else 0.2, hflip=0.5)


def dino_local_augment(size: int | Size2 = 96, scale: Range = (0.05, 0.4), blur: bool = True) -> ClipAugment:
    """DINO's local crops (Caron et al. 2021, ``DataAugmentationDINO``): crop ``scale`` (0.05, 0.4; the ResNet
    recipe (0.05, 0.14)), flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, blur p 0.5. Its two
    global crops are BYOL's pair (:func:`byol_augment`)."""
    return ClipAugment(size=size, scale=scale, color_jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2,
                       blur_p=0.5 if blur else 0.0, blur_sigma=(0.1, 2.0), hflip=0.5)


def moco_v1_augment(size: int | Size2, scale: Range = (0.2, 1.0)) -> ClipAugment:
    """MoCo v1 / InstDisc augmentation: RandomResizedCrop(0.2, 1), grayscale p=0.2, jitter (0.4, 0.4, 0.4, 0.4)
    always, horizontal flip p=0.5. (v1 greys before the jitter; here the jitter comes first, which only differs
    for the greyed 20%.)"""
    return ClipAugment(size=size, scale=scale, color_jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0, grayscale_p=0.2,
                       hflip=0.5)


def crop_flip(
    size: int | Size2,
    scale: Range = (0.8, 0.95),
    ratio: Range = (0.7, 1.3),
    hflip: float = 0.5,
    per_frame: bool = False,
) -> ClipAugment:
    """The correspondence methods' light augmentation: a random resized crop and a flip, no colour change.

    Defaults are CRW's frame crop (scale 0.8-0.95, aspect 0.7-1.3). CRW's code draws that crop per frame
    (its transform is mapped over frames); pass ``per_frame=True`` to follow it exactly.
    """
    return ClipAugment(size=size, scale=scale, ratio=ratio, hflip=hflip, per_frame=per_frame)


# --------------------------------------------------------------------------------------------------------
# CRW's patch grid
# --------------------------------------------------------------------------------------------------------


def jigsaw_tiles(clip: Tensor, grid: int = 3, tile: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Noroozi & Favaro's jigsaw tiles: ``(B, C, T, S, S)`` -> ``(B, grid^2, C, T, tile, tile)``, row-major.

    The square crop is cut into ``grid x grid`` cells of ``S // grid`` px (a remainder at the right and bottom
    is dropped) and each tile is a ``tile`` px window at a random position inside its cell, drawn per sample and
    tile (the gap and jitter that stop tiles matching by their edges). ``tile`` defaults to the cell's 64/85
    (the paper: 64 px tiles from 85 px cells of a 255 px crop). The same windows for every frame.
    """
    _check_clip(clip, "jigsaw_tiles")
    b, h, w = clip.shape[0], clip.shape[-2], clip.shape[-1]
    cell = min(h, w) // grid
    tile = tile if tile is not None else max(1, round(cell * 64 / 85))
    if grid < 1 or not 1 <= tile <= cell:
        raise ValueError(f"jigsaw_tiles: need grid >= 1 and 1 <= tile <= cell ({cell} px of a {h}x{w} crop), got "
                         f"grid={grid}, tile={tile}")
    n = grid * grid
    offsets = torch.randint(0, cell - tile + 1, (2, b, n), generator=generator).to(clip.device)  # (y, x)
    origin = torch.arange(grid, device=clip.device) * cell
    top = origin.repeat_interleave(grid)[None] + offsets[0]  # (B, N)
    left = origin.repeat(grid)[None] + offsets[1]
    rows = (top[..., None] + torch.arange(tile, device=clip.device))  # (B, N, tile)
    cols = (left[..., None] + torch.arange(tile, device=clip.device))
    frames = clip.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W)
    bi = torch.arange(b, device=clip.device)[:, None, None, None]
    out = frames[bi, :, :, rows[:, :, :, None], cols[:, :, None, :]]  # (B, N, tile, tile, T, C)
    return out.permute(0, 1, 5, 4, 2, 3)


def patch_grid(
    clip: Tensor,
    patch: int = 64,
    stride: int = 32,
    jitter: Range | None = (0.7, 0.9),
    ratio: Range = (3 / 4, 4 / 3),
    per_frame: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CRW's grid of patches: ``(B, C, T, H, W)`` -> ``(B, N, C, T, patch, patch)``, N = nh * nw, row-major.

    Windows of ``patch`` px at ``stride`` (a 256 px crop gives 7x7 = 49 patches of 64 px at stride 32;
    the remainder at the right/bottom is dropped, as skimage's ``view_as_windows`` in CRW). With ``jitter``
    (an area-scale range) each patch is replaced by a random resized crop of itself back to ``patch`` px,
    aspect in ``ratio``. CRW's code (``utils/augs.py``: a fresh RandomResizedCrop(64, scale=(0.7, 0.9)) per
    window, mapped over frames) draws that jitter independently for every patch *and every frame*; vidssl
    follows it by default, ``per_frame=False`` shares one jitter across the T frames of a patch. ``None``
    returns the exact slices ``clip[..., stride*i : stride*i + patch, stride*j : stride*j + patch]``.
    """
    _check_clip(clip, "patch_grid")
    b, c, t, h, w = clip.shape
    if patch <= 0 or stride <= 0:
        raise ValueError(f"patch_grid: patch and stride must be positive, got patch={patch}, stride={stride}")
    if h < patch or w < patch:
        raise ValueError(f"patch_grid: clip of {h}x{w} px is smaller than one {patch} px patch")
    nh, nw = (h - patch) // stride + 1, (w - patch) // stride + 1
    n = nh * nw
    if jitter is None:
        windows = clip.unfold(3, patch, stride).unfold(4, patch, stride)  # (B, C, T, nh, nw, p, p), a view
        return windows.permute(0, 3, 4, 1, 2, 5, 6).reshape(b, n, c, t, patch, patch)

    if not 0 < jitter[0] <= jitter[1] <= 1:
        raise ValueError(f"patch_grid: jitter is an area-scale range within (0, 1], got {jitter}")
    draws = b * n * t if per_frame else b * n
    boxes = _sample_boxes(draws, patch, patch, jitter, ratio, generator).view(b, n, -1, 4)  # in the window
    # shift each box by its window's origin and sample straight from the frames: one grid_sample over
    # (B*T) frames with N crops each, rather than first copying out the overlapping windows (3x the pixels
    # of the frame at stride p/2); separable interpolation matrices were measured slower on CPU
    rows, cols = torch.meshgrid(torch.arange(nh) * stride, torch.arange(nw) * stride, indexing="ij")
    origin = torch.stack([cols.flatten(), rows.flatten()], dim=1).to(boxes)  # (N, 2) = (x, y)
    boxes = torch.cat([boxes[..., :2] + origin[None, :, None], boxes[..., 2:]], dim=-1).expand(b, n, t, 4)
    frames = clip.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    out = _resized_crop(frames, boxes.permute(0, 2, 1, 3).reshape(b * t, n, 4), (patch, patch))
    return out.view(b, t, c, n, patch, patch).permute(0, 3, 2, 1, 4, 5)  # (B, N, C, T, p, p)


# --------------------------------------------------------------------------------------------------------
# The pretext tasks' input operations (RotNet's crops, the tiles' low-level shortcuts)
# --------------------------------------------------------------------------------------------------------


def pad_crop(clip: Tensor, size: int, pad: int, generator: torch.Generator | None = None,
             mode: Literal["zeros", "reflect"] = "zeros") -> Tensor:
    """torchvision's ``RandomCrop(size, padding=pad)``: ``(B, C, T, H, W)`` padded by ``pad`` px on every side
    (``zeros``: black, the CIFAR recipes' crop, RotNet: 32 px with padding 4; ``reflect``: mirrored, torchvision's
    ``padding_mode="reflect"``, for a task that would read the black border as free signal, such as
    colourisation's neutral ab), then a ``size`` px window at a uniformly random position per clip (the same for
    its frames) -> ``(B, C, T, size, size)``."""
    _check_clip(clip, "pad_crop")
    b, h, w = clip.shape[0], clip.shape[-2] + 2 * pad, clip.shape[-1] + 2 * pad
    if pad < 0 or not 1 <= size <= min(h, w):
        raise ValueError(f"pad_crop: need pad >= 0 and 1 <= size <= the padded {h}x{w}, got size={size}, pad={pad}")
    if mode not in ("zeros", "reflect"):
        raise ValueError(f"pad_crop: mode must be 'zeros' or 'reflect', got {mode!r}")
    if mode == "reflect":
        if pad >= min(clip.shape[-2:]):
            raise ValueError(f"pad_crop: reflect padding of {pad} px needs frames larger than that, got "
                             f"{clip.shape[-1]}x{clip.shape[-2]}")
        x = F.pad(clip.flatten(1, 2), (pad, pad, pad, pad), mode="reflect").unflatten(1, clip.shape[1:3])
    else:
        x = F.pad(clip, (pad, pad, pad, pad))
    top = torch.randint(0, h - size + 1, (b,), generator=generator).to(clip.device)
    left = torch.randint(0, w - size + 1, (b,), generator=generator).to(clip.device)
    rows = (top[:, None] + torch.arange(size, device=clip.device))[:, None, None, :, None]  # (B, 1, 1, s, 1)
    cols = (left[:, None] + torch.arange(size, device=clip.device))[:, None, None, None, :]
    bi = torch.arange(b, device=clip.device)[:, None, None, None, None]
    ci = torch.arange(x.shape[1], device=clip.device)[None, :, None, None, None]
    ti = torch.arange(x.shape[2], device=clip.device)[None, None, :, None, None]
    return x[bi, ci, ti, rows, cols]


def normalize_tiles(tiles: Tensor, eps: float = 1e-5) -> Tensor:
    """Each tile to zero mean and unit standard deviation per channel, independently (Noroozi & Favaro's
    normalisation against the low-level statistics that give a tile's neighbours away): ``(..., C, H, W)``."""
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    std = tiles.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (tiles - mean) / (std + eps)


# the green-magenta axis: Doersch et al.'s chromatic aberration shifts green against red and blue
_GREEN_MAGENTA = (-1.0, 2.0, -1.0)


def remove_chroma(x: Tensor, mode: str, generator: torch.Generator | None = None, noise: float = 0.01) -> Tensor:
    """Doersch et al.'s remedies against chromatic aberration, a shortcut to a patch's position: ``(B, 3, ...)``.

    ``project``: every pixel's colour projected onto the plane orthogonal to the green-magenta axis (-1, 2, -1),
    ``x - (x.a) a / |a|^2``, which removes the colour shift aberration causes; ``drop``: two of the three channels
    chosen at random per sample replaced by Gaussian noise of std ``noise`` x the kept channel's std (the paper's
    "color dropping"); ``none``: unchanged.
    """
    if mode == "none":
        return x
    if x.dim() < 2 or x.shape[1] != 3:
        raise ValueError(f"remove_chroma: expected (B, 3, ...) colour, got {tuple(x.shape)}")
    if mode == "project":
        a = torch.tensor(_GREEN_MAGENTA, dtype=x.dtype, device=x.device).view(1, 3, *([1] * (x.dim() - 2)))
        return x - (x * a).sum(dim=1, keepdim=True) * a / (a * a).sum()
    if mode == "drop":
        b = x.shape[0]
        keep = torch.randint(0, 3, (b,), generator=generator).to(x.device)
        mask = F.one_hot(keep, 3).to(x.dtype).view(b, 3, *([1] * (x.dim() - 2)))
        kept = (x * mask).sum(dim=1, keepdim=True)
        scale = kept.flatten(1).std(dim=1).view(b, 1, *([1] * (x.dim() - 2))) * noise
        z = torch.randn(x.shape, generator=generator).to(x)
        return x * mask + (1 - mask) * z * scale
    raise ValueError(f"remove_chroma: mode must be none, project or drop, got {mode!r}")


def random_affine(x: Tensor, degrees: float, translate: float, scale: Range,
                  generator: torch.Generator | None = None) -> Tensor:
    """A random similarity per image of ``(B, C, H, W)``: rotation uniform in ``[-degrees, degrees]``, scale
    log-uniform in ``scale``, translation uniform in ``[-translate, translate]`` of the size on each axis, about the
    centre, bilinear with reflected borders (so no black corners appear to give the transformation away)."""
    if x.dim() != 4 or degrees < 0 or translate < 0 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"random_affine: need (B, C, H, W), degrees >= 0, translate >= 0, 0 < scale[0] <= scale[1]; "
                         f"got {tuple(x.shape)}, {degrees}, {translate}, {scale}")
    b = x.shape[0]
    angle = _uniform((b,), -degrees, degrees, generator) * math.pi / 180
    s = torch.exp(_uniform((b,), math.log(scale[0]), math.log(scale[1]), generator))
    shift = _uniform((b, 2), -2 * translate, 2 * translate, generator)  # in normalised [-1, 1] coordinates
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # the grid maps output to input: the inverse scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
