"""Benchmark the one local-window copy (``vidssl.nn.local_attention``) at the sizes its users run it, against
the per-displacement loop it replaced (written out here, as MAST's code and vidssl before the shared layer
computed it), one thread.

    python tools/bench_local_attention.py [--repeats 3] [--json out.json]

Cases: CorrFlow's copy forward and backward at the CPU config (batch 8, 256-d, 16x16 cells, 13x13 window) and
the recipe (batch 6, 512-d, 64x64, 13x13); MAST's memory at 240p (60x107 cells, 25x25 windows), one local and
one ROI reference (against a bilinear read of the whole reference per displacement), and the ROI search at
dilation 2 (against one product map per displacement), no gradient. Prints median seconds and the ratio
loop / tiled; the two results agree to float error (the largest difference is printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidssl.nn.local_attention import Reference, local_attention, roi_offsets


def displacement_loop(feat_t: torch.Tensor, refs: list[Reference], radius: int, scale: float) -> torch.Tensor:
    """The reference: one elementwise pass per window displacement, local windows only (no ROI offsets)."""
    h, w = feat_t.shape[-2:]
    size = 2 * radius + 1
    neg = torch.finfo(feat_t.dtype).min
    logits, values = [], []
    for f_r, v_r, offset in refs:
        assert offset is None, "the loop reference covers local windows"
        pad, vpad = F.pad(f_r, (radius,) * 4), F.pad(v_r, (radius,) * 4)
        inside = F.pad(torch.ones(1, h, w, dtype=torch.bool), (radius,) * 4)
        for dy in range(size):
            for dx in range(size):
                z = (feat_t * pad[:, :, dy:dy + h, dx:dx + w]).sum(1) * scale
                logits.append(z.masked_fill(~inside[:, dy:dy + h, dx:dx + w], neg))
                values.append(vpad[:, :, dy:dy + h, dx:dx + w])
    p = F.softmax(torch.stack(logits, 1), dim=1)  # (B, refs * P^2, h, w)
    return (p.unsqueeze(1) * torch.stack(values, 2)).sum(2)


def roi_loop(feat_t: torch.Tensor, f_r: torch.Tensor, v_r: torch.Tensor, offset: torch.Tensor, radius: int,
             scale: float) -> torch.Tensor:
    """The ROI reference as vidssl read it before: one bilinear ``grid_sample`` of the whole reference per window
    displacement at ``p + offset(p) + d`` (zero padding, pixel-centre coordinates, MAST's ``deform_im2col``)."""
    h, w = feat_t.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=feat_t.dtype), torch.arange(w, dtype=feat_t.dtype), indexing="ij")
    logits, values = [], []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            px, py = xx + offset[:, 0] + dx, yy + offset[:, 1] + dy  # (B, h, w)
            grid = torch.stack([px * 2 / (w - 1) - 1, py * 2 / (h - 1) - 1], -1)
            logits.append((feat_t * F.grid_sample(f_r, grid, padding_mode="zeros", align_corners=True)).sum(1) * scale)
            values.append(F.grid_sample(v_r, grid, padding_mode="zeros", align_corners=True))
    p = F.softmax(torch.stack(logits, 1), dim=1)
    return (p.unsqueeze(1) * torch.stack(values, 2)).sum(2)


def search_loop(feat_t: torch.Tensor, f_r: torch.Tensor, dilation: int, radius: int, scale: float) -> torch.Tensor:
    """The coarse ROI search as vidssl computed it before: one product map per dilated displacement."""
    h, w = feat_t.shape[-2:]
    reach = radius * dilation
    pad = F.pad(f_r, (reach,) * 4)
    zs, disp = [], []
    for iy in range(-radius, radius + 1):
        for ix in range(-radius, radius + 1):
            oy, ox = reach + iy * dilation, reach + ix * dilation
            zs.append((feat_t * pad[:, :, oy:oy + h, ox:ox + w]).sum(1) * scale)
            disp.append((ix * dilation, iy * dilation))
    p = F.softmax(torch.stack(zs, 1), 1)
    return torch.einsum("bnhw,nk->bkhw", p, torch.tensor(disp, dtype=feat_t.dtype))


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _copy_case(b: int, c: int, hw: int, radius: int, repeats: int, tile: int | None) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    ft = torch.randn(b, c, hw, hw, generator=g, requires_grad=True)
    fr = torch.randn(b, c, hw, hw, generator=g, requires_grad=True)
    labels = torch.rand(b, 16, hw, hw, generator=g)
    scale = c ** -0.5

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            ft.grad = fr.grad = None
            out = fn()
            out.sum().backward()
            return out.detach()
        return step

    tiled, a = _median(run(lambda: local_attention(ft, [(fr, labels, None)], radius, scale, tile)),
                       repeats)
    loop, b_ = _median(run(lambda: displacement_loop(ft, [(fr, labels, None)], radius, scale)), max(1, repeats // 2))
    return {"case": f"CorrFlow copy fwd+bwd, B {b}, C {c}, {hw}x{hw}, window {2 * radius + 1}", "tiled_s": tiled,
            "loop_s": loop, "max_diff": float((a - b_).abs().max())}


def _memory_case(repeats: int, tile: int | None) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(1)
    ft, fr = (torch.randn(1, 512, 60, 107, generator=g) for _ in range(2))
    values = torch.rand(1, 2, 60, 107, generator=g)
    offset = torch.randn(1, 2, 60, 107, generator=g) * 3
    with torch.no_grad():
        tiled, a = _median(lambda: local_attention(ft, [(fr, values, None)], 12, 512 ** -0.5, tile), repeats)
        loop, b = _median(lambda: displacement_loop(ft, [(fr, values, None)], 12, 512 ** -0.5), 1)
        roi, c = _median(lambda: local_attention(ft, [(fr, values, offset, None)], 12, 512 ** -0.5, tile, "zero"),
                         repeats)
        roi_l, d = _median(lambda: roi_loop(ft, fr, values, offset, 12, 512 ** -0.5), 1)
        search, e = _median(lambda: roi_offsets(ft, fr, 2, 12, 512 ** -0.5, "zero"), repeats)
        search_l, f = _median(lambda: search_loop(ft, fr, 2, 12, 512 ** -0.5), 1)
    return [{"case": "MAST memory, one local reference, 60x107, 25x25", "tiled_s": tiled, "loop_s": loop,
             "max_diff": float((a - b).abs().max())},
            {"case": "MAST memory, one ROI reference, 60x107, 25x25", "tiled_s": roi, "loop_s": roi_l,
             "max_diff": float((c - d).abs().max())},
            {"case": "MAST ROI search, 60x107, 25x25 at dilation 2", "tiled_s": search, "loop_s": search_l,
             "max_diff": float((e - f).abs().max())}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=None, help="tile side in cells (default: local_attention's)")
    parser.add_argument("--skip-recipe", action="store_true", help="leave out the recipe-size CorrFlow case")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [_copy_case(8, 256, 16, 6, args.repeats, args.tile)]
    if not args.skip_recipe:
        rows.append(_copy_case(6, 512, 64, 6, 1, args.tile))
    rows += _memory_case(args.repeats, args.tile)
    print("| case | tiled s | loop s | loop / tiled | max diff |\n|---|---|---|---|---|")
    for r in rows:
        ratio = r["loop_s"] / r["tiled_s"]
        print(f"| {r['case']} | {r['tiled_s']:.3f} | {r['loop_s']:.3f} | {ratio:.1f} | {r['max_diff']:.1e} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"threads": 1, "tile": args.tile, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
