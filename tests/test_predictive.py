"""Contrastive predictive coding (CPC, CPC v2, Greedy InfoMax): the loss's closed forms and indexing, the context
network's causality (a prediction never sees its target row), layer norm's batch independence, the gradient
isolation of Greedy InfoMax's modules, and the gathered negatives across two processes."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from vidssl.engine import distributed as dist
from vidssl.losses import amdim_nce, cpc_loss, dense_info_nce, dim_loss
from vidssl.methods import METHODS
from vidssl.models import build_backbone
from vidssl.nn.context import ContextNetwork, RowCausalConv2d
from vidssl.nn.convgru import ConvGRU

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import _free_port, _torchrun_env


def _make(name: str, **extra: Any) -> Any:
    from tests.test_methods import TINY

    cls = METHODS[name]
    return cls(cls.Config(**{**TINY[name], **extra}))


def test_cpc_loss_at_zero_predictions_is_ln_of_all_patches() -> None:
    targets = torch.randn(3, 4, 5, 2)
    zero = [torch.zeros_like(targets), torch.zeros_like(targets)]
    loss, _ = cpc_loss(zero, targets, [1, 3])
    assert float(loss) == pytest.approx(math.log(3 * 5 * 2), abs=1e-6)


def test_cpc_loss_scores_the_patch_k_rows_below() -> None:
    b, h, w = 2, 4, 3
    n = b * h * w
    targets = torch.eye(n).view(b, h, w, n).permute(0, 3, 1, 2)  # every patch its own one-hot embedding
    for k in (1, 2):
        right = 20 * torch.roll(targets, shifts=-k, dims=2)  # the cell (i, j) predicts the one-hot of (i + k, j)
        loss, acc = cpc_loss([right], targets, [k])
        assert float(acc) == 1.0 and float(loss) < 1e-6
        wrong = 20 * torch.roll(targets, shifts=-k, dims=3)  # the cell to the right instead
        assert float(cpc_loss([wrong], targets, [k])[1]) == 0.0
    with pytest.raises(ValueError, match="every offset in 1..3"):
        cpc_loss([targets], targets, [4])


def test_context_sees_only_rows_above_and_its_own() -> None:
    torch.manual_seed(0)
    net = ContextNetwork(4, 6, blocks=3, kernel=3)
    x = torch.randn(2, 4, 6, 5)
    base = net(x)
    for row in range(6):
        y = x.clone()
        y[:, :, row] += torch.randn(2, 4, 5)
        changed = (net(y) - base).abs().amax(dim=(0, 1, 3)) > 1e-6  # (H,): rows whose context moved
        assert not changed[:row].any() and changed[row], (row, changed)
    conv = RowCausalConv2d(2, 2, 3)
    assert conv(torch.randn(1, 2, 4, 4)).shape == (1, 2, 4, 4)


def test_layer_norm_trunk_has_no_batch_statistics() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18_cifar_ln").train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(4, 3, 8, 8)
    other = torch.cat([x[:1], torch.randn(3, 3, 8, 8)])
    torch.testing.assert_close(net(x)[0], net(other)[0])  # a patch's embedding ignores the rest of the batch
    from vidssl.models.registry import backbone_from_config

    rebuilt = backbone_from_config(net.config)
    assert rebuilt.config["norm"] == "layer" and not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.modules())


def test_greedy_infomax_modules_are_gradient_isolated() -> None:
    torch.manual_seed(0)
    method = _make("greedy_infomax", stages=[[1], [2, 3], [4]])
    from tests.test_methods import _batch

    patches, rows, cols = method.patches(_batch(method))
    outs = method.module_outputs(patches)
    losses = [head(method.to_grid(method.pooled(m), 4, rows, cols))[0]
              for m, head in zip(outs, method.heads, strict=True)]
    owners = {"conv1": 0, "bn1": 0, "layer1": 0, "layer2": 1, "layer3": 1, "layer4": 2}
    for i, loss in enumerate(losses):
        method.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for name, p in method.backbone.named_parameters():
            reached = p.grad is not None and bool(p.grad.abs().sum() > 0)
            assert reached == (owners[name.split(".")[0]] == i), (i, name)
        for j, head in enumerate(method.heads):
            assert any(p.grad is not None for p in head.parameters()) == (j == i)
    with pytest.raises(ValueError, match="every residual stage"):
        _make("greedy_infomax", stages=[[1, 3], [2, 4]])


def test_cpc_v2_drops_colour_per_patch() -> None:
    torch.manual_seed(0)
    method = _make("cpc_v2", colour_drop=1.0)
    seen: list[torch.Tensor] = []
    method.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    from tests.test_methods import _batch

    method(_batch(method))
    from vidssl.nn.colour import imagenet_denormalize

    rgb = imagenet_denormalize(seen[0])
    spread = rgb.flatten(2).std(dim=2)  # (patches, 3): one channel keeps the patch, two are faint noise
    assert bool(((spread > 0.05).sum(dim=1) <= 1).all())


# ---- the gathered negatives across two processes -----------------------------------------------------------

WORLD, B, D, H, W = 2, 2, 3, 4, 2


def _global() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(WORLD * B, D, H, W, generator=g, dtype=torch.float64),
            torch.randn(WORLD * B, D, H, W, generator=g, dtype=torch.float64))


def _dim_inputs(rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """DIM's global ``(N, D)`` and local ``(N, H W, D)`` features of the global batch, or of one process's share."""
    g, loc = _global()
    g, loc = g.mean(dim=(2, 3)), loc.flatten(2).transpose(1, 2)
    if rank is not None:
        g, loc = g[rank * B:(rank + 1) * B], loc[rank * B:(rank + 1) * B]
    return g.clone().requires_grad_(True), loc.clone().requires_grad_(True)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _torchrun_env(rank, world, port)
    dist.setup("cpu")
    try:
        pred, targets = (z[rank * B:(rank + 1) * B].clone().requires_grad_(True) for z in _global())
        loss, _ = cpc_loss([pred], targets, [1])
        loss.backward()
        p2, t2 = (z[rank * B:(rank + 1) * B].flatten(1).clone().requires_grad_(True) for z in _global())
        dense, _ = dense_info_nce(p2, t2)
        dense.backward()
        dims = {}
        for estimator in ("jsd", "infonce"):
            g, loc = _dim_inputs(rank)
            value = dim_loss(g, loc, estimator)
            value.backward()
            dims[estimator] = (value.detach(), g.grad, loc.grad)
        torch.save({"loss": loss.detach(), "gp": pred.grad, "gt": targets.grad, "dense": dense.detach(),
                    "dp": p2.grad, "dt": t2.grad, "dim": dims}, f"{out}/rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_cpc_and_dense_losses_gather_every_processs_patches(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD)
    r = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(WORLD)]
    pred, targets = (z.clone().requires_grad_(True) for z in _global())
    whole, _ = cpc_loss([pred], targets, [1])
    gp, gt = torch.autograd.grad(whole, (pred, targets))
    torch.testing.assert_close(sum(x["loss"] for x in r) / WORLD, whole.detach())
    for k in range(WORLD):
        rows = slice(k * B, (k + 1) * B)
        torch.testing.assert_close(r[k]["gp"] / WORLD, gp[rows])
        torch.testing.assert_close(r[k]["gt"] / WORLD, gt[rows])
    # DIM's global-local scores against every process's locals, both estimators
    for estimator in ("jsd", "infonce"):
        g, loc = _dim_inputs(None)
        whole_dim = dim_loss(g, loc, estimator)
        gg, gl = torch.autograd.grad(whole_dim, (g, loc))
        torch.testing.assert_close(sum(x["dim"][estimator][0] for x in r) / WORLD, whole_dim.detach())
        for k in range(WORLD):
            rows = slice(k * B, (k + 1) * B)
            torch.testing.assert_close(r[k]["dim"][estimator][1] / WORLD, gg[rows], msg=estimator)
            torch.testing.assert_close(r[k]["dim"][estimator][2] / WORLD, gl[rows], msg=estimator)
    # DPC's dense InfoNCE over the gathered rows, the same way
    p2, t2 = (z.flatten(1).clone().requires_grad_(True) for z in _global())
    dense, _ = dense_info_nce(p2, t2)
    dp, dt = torch.autograd.grad(dense, (p2, t2))
    torch.testing.assert_close(sum(x["dense"] for x in r) / WORLD, dense.detach())
    for k in range(WORLD):
        rows = slice(k * B, (k + 1) * B)
        torch.testing.assert_close(r[k]["dp"] / WORLD, dp[rows])
        torch.testing.assert_close(r[k]["dt"] / WORLD, dt[rows])


@pytest.mark.parametrize("name", ["cpc", "cpc_v2", "greedy_infomax"])
def test_the_loss_starts_at_chance(name: str) -> None:
    """The predictors start near zero, so the first loss is ln(B H W) (per module for Greedy InfoMax) whatever the
    scale of the trunk's raw features."""
    from tests.test_methods import _batch

    torch.manual_seed(0)
    method = _make(name, crop_size=24)  # 5 x 5 patches
    loss, _ = method(_batch(method))
    modules = 3 if name == "greedy_infomax" else 1
    assert float(loss.detach()) == pytest.approx(modules * math.log(4 * 25), rel=0.01)


# ---- DPC -----------------------------------------------------------------------------------------------------


def test_dense_info_nce_chance_and_positives() -> None:
    targets = torch.randn(12, 5)
    loss, _ = dense_info_nce(torch.zeros(12, 5), targets)
    assert float(loss) == pytest.approx(math.log(12), abs=1e-6)
    one_hot = torch.eye(12)
    loss, acc = dense_info_nce(30 * one_hot, one_hot)
    assert float(acc) == 1.0 and float(loss) < 1e-6


def test_convgru_shapes_and_state() -> None:
    torch.manual_seed(0)
    gru = ConvGRU(3, 4, layers=2, kernel=3)
    x = torch.randn(2, 5, 3, 6, 6)
    out, state = gru(x)
    assert out.shape == (2, 5, 4, 6, 6) and len(state) == 2 and state[-1].shape == (2, 4, 6, 6)
    torch.testing.assert_close(out[:, -1], state[-1])
    continued, _ = gru(x[:, 3:], gru(x[:, :3])[1])  # continuing from a state is the same as one pass
    torch.testing.assert_close(continued, out[:, 3:])


def test_dpc_chance_level_and_causal_rollout() -> None:
    torch.manual_seed(0)
    method = _make("dpc", num_blocks=5, pred_steps=2).eval()
    last = method.predictor[2]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    video = torch.randint(0, 256, (3, 3, 10, 24, 24), dtype=torch.uint8)
    loss, _ = method({"video": video})
    # 16 px crops on the ImageNet stem: 1x1 feature maps; B x P x h w = 3 x 2 x 1 candidates
    assert float(loss.detach()) == pytest.approx(math.log(3 * 2 * 1), abs=1e-5)
    torch.manual_seed(1)
    method = _make("dpc", num_blocks=5, pred_steps=2).eval()
    z = torch.randn(2, 5, 512, 2, 2)
    with torch.no_grad():
        base = method.rollout(z)
        future = z.clone()
        future[:, 3:] += torch.randn_like(future[:, 3:])  # the blocks being predicted
        torch.testing.assert_close(method.rollout(future), base, rtol=0, atol=0)
        past = z.clone()
        past[:, 2] += 1.0
        assert not torch.allclose(method.rollout(past), base)


def test_dpc_on_the_r3d_clip_trunk() -> None:
    from vidssl.models.video import VideoResNet

    torch.manual_seed(0)
    method = _make("dpc", backbone="r3d_18", num_blocks=3, block_len=2, pred_steps=1, crop_size=32)
    assert isinstance(method.encoder(), VideoResNet)
    loss, _ = method({"video": torch.randint(0, 256, (2, 3, 6, 32, 32), dtype=torch.uint8)})
    loss.backward()
    assert float(loss.detach()) > 0 and method.encoder().stem[0].weight.grad is not None


# ---- DIM -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator,value", [("jsd", 2 * math.log(2)), ("infonce", math.log(1 + (4 - 1) * 6))])
def test_dim_loss_at_zero_scores(estimator: str, value: float) -> None:
    loss = dim_loss(torch.zeros(4, 5), torch.randn(4, 6, 5), estimator)  # zero globals: every score 0
    assert float(loss) == pytest.approx(value, abs=1e-6)


def test_dim_loss_rewards_the_own_images_locals() -> None:
    g = 5 * torch.eye(4, 8)[:, :8]  # image i's global along axis i
    own = torch.eye(4, 8)[:, None, :].expand(4, 3, 8)  # its locals along the same axis, the others orthogonal
    for estimator in ("jsd", "infonce"):
        good = dim_loss(g, own, estimator)
        shuffled = dim_loss(g, own.roll(1, dims=0), estimator)  # every image paired with another's locals
        assert float(good) < float(shuffled) - 1.0, estimator  # (JSD keeps ln 2 from negatives scored 0)
    with pytest.raises(ValueError, match="estimator"):
        dim_loss(g, own, "nce")


def test_dim_reads_locals_before_the_global_output() -> None:
    torch.manual_seed(0)
    method = _make("dim", local_stage=3)
    local, out = method.features(torch.randn(2, 3, 32, 32))
    assert local.shape == (2, 256, 2, 2) and out.shape == (2, 512, 1, 1)  # the ImageNet stem of TINY at 32 px
    with pytest.raises(ValueError, match="local_stage 5|local_stage in 1..4"):
        _make("dim", local_stage=5)


def _global_local_nce_reference(s: torch.Tensor) -> torch.Tensor:
    """InfoNCE written out: for every image i and own position p, a softmax over s[i, i, p] and every s[i, j, q],
    j != i, built as one explicit row of logits each."""
    n, _, p = s.shape
    losses = []
    for i in range(n):
        negatives = torch.cat([s[i, j] for j in range(n) if j != i])
        for q in range(p):
            row = torch.cat([s[i, i, q:q + 1], negatives])
            losses.append(-torch.log_softmax(row, dim=0)[0])
    return torch.stack(losses).mean()


def test_dim_infonce_equals_the_written_out_softmax() -> None:
    torch.manual_seed(0)
    g, loc = torch.randn(4, 5), torch.randn(4, 6, 5)
    reference = _global_local_nce_reference(torch.einsum("nd,mpd->nmp", g, loc))
    torch.testing.assert_close(dim_loss(g, loc, "infonce"), reference)


def test_amdim_nce_closed_forms_and_reference() -> None:
    nce, penalty = amdim_nce(torch.zeros(4, 16), torch.randn(4, 6, 16))
    assert float(nce) == pytest.approx(math.log(1 + 3 * 6), abs=1e-6) and float(penalty) == 0.0
    torch.manual_seed(1)
    src, trg = 3 * torch.randn(4, 16), 3 * torch.randn(4, 6, 16)
    raw = torch.einsum("nd,mpd->nmp", src, trg) / 4.0  # over sqrt(16)
    nce, penalty = amdim_nce(src, trg, clip=5.0, reg_weight=0.1)
    torch.testing.assert_close(penalty, 0.1 * (raw**2).mean())  # on the raw scores, before clipping
    torch.testing.assert_close(nce, _global_local_nce_reference(5.0 * torch.tanh(raw / 5.0)))
    assert float(raw.abs().max()) > 5.0  # the clip was exercised
    unclipped, _ = amdim_nce(src, trg, clip=1e6)
    torch.testing.assert_close(unclipped, _global_local_nce_reference(raw), rtol=1e-4, atol=1e-4)


def test_amdim_costs_across_views_and_scales() -> None:
    torch.manual_seed(0)
    method = _make("dim", objective="amdim", crop_size=64, jitter=(0.4, 0.4, 0.4, 0.2), grayscale_p=0.25)
    x = torch.randn(3, 3, 64, 64)
    r1, r5, r7 = method.scales(x)
    assert r1.shape == (3, 512) and r5.shape == (3, 4, 512) and r7.shape == (3, 16, 512)  # stages 4 and 3 at 64 px
    one, two = method.scales(x), method.scales(x.flip(-1))
    where = (torch.tensor([0, 3, 1]), torch.tensor([2, 2, 0]))
    terms = method.amdim_terms(one, two, where)
    rows = torch.arange(3)
    expect = {
        "1t5": [amdim_nce(one[0], two[1]), amdim_nce(two[0], one[1])],
        "1t7": [amdim_nce(one[0], two[2]), amdim_nce(two[0], one[2])],
        "5t5": [amdim_nce(one[1][rows, where[0]], two[1]), amdim_nce(two[1][rows, where[1]], one[1])],
    }
    for name, (a, b) in expect.items():
        torch.testing.assert_close(terms[name], 0.5 * (a[0] + b[0]))
    torch.testing.assert_close(terms["reg"], sum(0.5 * (a[1] + b[1]) for a, b in expect.values()))
    from tests.test_methods import _batch

    loss, metrics = method(_batch(method))
    assert set(metrics) == {"loss_1t5", "loss_1t7", "loss_5t5", "loss_reg"}
    loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert method.scale_encoders[1].linear.weight.grad is not None
    with pytest.raises(ValueError, match="amdim_stages"):
        _make("dim", objective="amdim", amdim_stages=(5, 3))


# ---- VIVI ----------------------------------------------------------------------------------------------------


def test_pseudo_shots_and_shot_sequences() -> None:
    import numpy as np

    from vidssl.data.samplers import pseudo_shots
    from vidssl.data.views import ShotSequence, VideoInfo

    assert pseudo_shots([(0, 100)], 30) == [(0, 30), (30, 60), (60, 100)]  # a 10-frame rest joins the last
    assert pseudo_shots([(0, 95), (95, 100)], 30) == [(0, 30), (30, 60), (60, 95), (95, 100)]
    rng = np.random.default_rng(0)
    two_cuts = VideoInfo(60, shots=lambda: [(0, 20), (20, 45), (45, 60)])
    rows = ShotSequence(3, 2, pseudo_shot_len=None)(two_cuts, rng)
    assert rows.shape == (3, 2) and rows[0].max() < 20 and 20 <= rows[1].min() <= rows[1].max() < 45
    no_cut = VideoInfo(90, shots=lambda: [(0, 90)])
    rows = ShotSequence(3, 2, pseudo_shot_len=30)(no_cut, rng)
    assert [int(r.min()) // 30 for r in rows] == [0, 1, 2] and all(r.min() // 30 == r.max() // 30 for r in rows)


def test_vivi_video_level_chance_and_levels() -> None:
    from tests.test_methods import _batch

    torch.manual_seed(0)
    method = _make("vivi", frame_weight=0.0, shot_weight=0.0)
    last = method.order_head[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    loss, metrics = method(_batch(method))
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6) and set(metrics) == {
        "loss_video", "acc_video", "chance_video"}
    every = _make("vivi", order_classes=0)
    assert len(every.orders) == math.factorial(3)
    loss, metrics = every(_batch(every))
    assert {"loss_frame", "loss_shot", "loss_video"} <= set(metrics)
    predict = _make("vivi", video_level="predict")
    assert torch.isfinite(predict(_batch(predict))[0])
    with pytest.raises(ValueError, match="every level is switched off"):
        off = _make("vivi", frame_weight=0.0, shot_weight=0.0, video_level="none")
        off(_batch(off))


def test_vivi_attention_pooling_is_a_weighted_mean() -> None:
    torch.manual_seed(0)
    method = _make("vivi", pooling="attention")
    frames = torch.randn(2, 3, 4, 8)
    same = frames[:, :, :1].expand_as(frames)
    torch.testing.assert_close(method.pool(same), frames[:, :, 0])  # identical frames: the frame itself
    pooled = method.pool(frames)
    assert pooled.shape == (2, 3, 8)
    lo, hi = frames.min(dim=2).values, frames.max(dim=2).values
    assert bool(((pooled >= lo - 1e-6) & (pooled <= hi + 1e-6)).all())  # a convex combination


def test_dpc_clip_trunk_is_scored_by_eval_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DPC encoder on ``r3d_18`` goes through ``vidssl eval action`` as a clip trunk: its checkpoint rebuilds the
    video trunk, the protocol says so, and a changed weight changes the features the probe reads."""
    import json

    from vidssl.cli import main
    from vidssl.eval.action import ClipModel, ClipProtocol
    from vidssl.models.record import encoder_entries, load_record
    from vidssl.models.video import VideoResNet

    torch.manual_seed(0)
    method = _make("dpc", backbone="r3d_18", num_blocks=3, block_len=2, pred_steps=1, crop_size=32)
    path = tmp_path / "dpc.pt"
    torch.save({"step": 1, **encoder_entries(method.encoder(), method.encoder_input)}, path)
    record = load_record(str(path))
    assert isinstance(record.backbone, VideoResNet)
    for a, b in zip(record.backbone.state_dict().values(), method.encoder().state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the trained weights, not a fresh trunk
    clips = torch.rand(2, 3, 4, 32, 32)
    protocol = ClipProtocol(frames=4, stride=1, resize=32, size=32)
    model = ClipModel(record, protocol).eval()
    with torch.no_grad():
        feats = model(clips)
        assert feats.shape == (2, model.dim) and model.clip_level
        for p in record.backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
        assert not torch.allclose(model(clips), feats)

    root = tmp_path / "actions"
    assert main(["data", "synth-actions", "--out", str(root), "--train-per-class", "2", "--test-per-class", "1",
                 "--frames", "6", "--size", "32"]) == 0
    out = tmp_path / "action.json"
    assert main(["eval", "action", "--root", str(root), "--encoder", str(path), "--frames", "4", "--stride", "1",
                 "--resize", "32", "--size", "32", "--train-clips", "1", "--test-clips", "1", "--linear-epochs", "2",
                 "--batch-size", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["trunk"] == "clip" and result["test_videos"] == 8 and "a clip trunk" in result["protocol"]
    assert 0 <= result["linear"]["video_top1"] <= 1
    capsys.readouterr()
