"""The image pretext tasks (rotation, jigsaw, relative position, colourisation, context encoder, exemplar) beyond
the contract of tests/test_methods.py: closed forms (chance-level losses, rebalancing, soft targets), the labels of
the transformations each task draws, its input operations, `vidssl eval pretext`, the layer the probes read and
the images written at checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_methods import TINY, _batch, _first_epoch
from vidssl.data.augment import normalize_tiles, pad_crop, random_affine, remove_chroma
from vidssl.data.permutations import hamming_distances, load_permutations, max_hamming_permutations, min_hamming
from vidssl.losses import batch_hard_triplet
from vidssl.methods import METHODS
from vidssl.methods.context_encoder import centre_box, loss_weights
from vidssl.methods.relative_position import NEIGHBOURS, relative_patches
from vidssl.methods.rotation import rotations
from vidssl.models import ResNet, truncate
from vidssl.nn.colour import (
    ab_error_auc,
    annealed_mean,
    gamut_bins,
    quantize_ab,
    rebalancing_weights,
    rgb_to_lab,
    smooth_prior,
    soft_encode,
)
from vidssl.paths import REPO_ROOT
from vidssl.train import load_run_config

PRETEXT = ["rotation", "jigsaw", "relative_position", "colorization", "context_encoder", "exemplar"]


def make(name: str, **extra: Any) -> Any:
    cls = METHODS[name]
    method = cls(cls.Config(**{**TINY[name], **extra}))
    _first_epoch(method)
    return method


def _zero_last_linear(module: torch.nn.Module) -> None:
    """Zero the last Linear / Conv2d of ``module``: the logits become exactly 0 (uniform)."""
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()


# ---- chance level: uniform logits give ln C -----------------------------------------------------------------

@pytest.mark.parametrize(("name", "head", "classes"), [
    ("rotation", "classifier", 4), ("relative_position", "classifier", 8), ("jigsaw", "classifier", 100),
    ("exemplar", "head", TINY["exemplar"]["num_classes"]),
])
def test_uniform_logits_give_ln_of_the_number_of_classes(name: str, head: str, classes: int) -> None:
    torch.manual_seed(0)
    method = make(name)
    _zero_last_linear(getattr(method, head))
    loss, _ = method(_batch(method))
    assert float(loss.detach()) == pytest.approx(math.log(classes), abs=1e-6)


def test_colorization_with_uniform_logits_and_no_rebalancing_costs_ln_313() -> None:
    torch.manual_seed(0)
    method = make("colorization", rebalance=1.0)
    _zero_last_linear(method.head)
    loss, metrics = method(_batch(method))
    assert float(loss.detach()) == pytest.approx(math.log(313), abs=1e-5)
    assert float(metrics["colour_images"]) == 1.0


# ---- rotation ---------------------------------------------------------------------------------------------------

def test_a_rotated_batch_has_the_labels_of_its_rotations() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)  # no symmetry: each rotation differs
    out, labels = rotations(x)
    assert out.shape == (8, 3, 5, 5) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for i in range(8):
        k, b = int(labels[i]), i % 2
        assert torch.equal(out[i], torch.rot90(x[b], k, dims=(1, 2)))
    # 90 degrees counter-clockwise: the top-right pixel goes to the top-left
    assert out[2, 0, 0, 0] == x[0, 0, 0, 4]
    with pytest.raises(ValueError, match="square"):
        rotations(torch.zeros(1, 3, 4, 5))


def test_rotation_sees_every_image_in_all_four_rotations() -> None:
    torch.manual_seed(0)
    method = make("rotation")
    logits, target = method.task(_batch(method, batch_size=3))
    assert logits.shape == (12, 4) and torch.bincount(target).tolist() == [3, 3, 3, 3]


def test_pad_crop_is_a_window_of_the_zero_padded_image() -> None:
    x = torch.rand(6, 3, 1, 8, 8)
    assert torch.equal(pad_crop(x, 8, 0), x)
    out = pad_crop(x, 8, 2, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    for b in range(6):
        hits = [(t, left) for t in range(5) for left in range(5)
                if torch.equal(out[b], padded[b, :, :, t:t + 8, left:left + 8])]
        assert hits, b
    with pytest.raises(ValueError, match="pad_crop"):
        pad_crop(x, 13, 2)
    # reflect: a window of the mirrored image (numpy's "reflect", torchvision's padding_mode="reflect"), no black
    x = torch.rand(4, 3, 2, 8, 8) + 0.5
    out = pad_crop(x, 8, 3, generator=torch.Generator().manual_seed(1), mode="reflect")
    mirrored = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (0, 0), (3, 3), (3, 3)), mode="reflect"))
    for b in range(4):
        windows = [mirrored[b, :, :, t:t + 8, left:left + 8] for t in range(7) for left in range(7)]
        assert any(torch.equal(out[b], w) for w in windows)
    assert bool((out >= 0.5).all())
    with pytest.raises(ValueError, match="reflect padding of 8 px"):
        pad_crop(x, 8, 8, mode="reflect")


def test_colorization_pads_its_shift_by_reflection() -> None:
    """Colourisation's CIFAR crop mirrors the border in: no black pixels (L 0, neutral ab: colour for free)."""
    method = make("colorization", pad=4, crop_scale=(1.0, 1.0))
    assert method.cfg.pad_mode == "reflect"
    batch = {"video": torch.full((3, 3, 1, 32, 32), 200, dtype=torch.uint8)}
    assert bool((method.views(batch)[:, 0] > 50).all())  # L of the mid-grey everywhere
    method.cfg.pad_mode = "zeros"
    torch.manual_seed(0)
    assert bool((method.views(batch)[:, 0] < 1).any())  # the zero border shows (some shift is nonzero)


# ---- jigsaw -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [100, 1000])
def test_the_stored_permutation_sets_have_the_hamming_distance_they_claim(count: int) -> None:
    path = REPO_ROOT / "configs" / f"jigsaw_permutations_{count}.json"
    data = json.loads(path.read_text())
    perms = load_permutations(path)  # checks rows, duplicates and the claim
    assert perms.shape == (count, 9) and data["count"] == count
    d = hamming_distances(perms)
    np.fill_diagonal(d, 99)
    assert int(d.min()) == data["min_hamming"] >= 5


def test_the_greedy_set_is_optimal_where_brute_force_can_check() -> None:
    # 4 tiles: two permutations can differ everywhere (distance 4); among 4 of them, the best minimal distance of
    # all C(24, 4) sets is 4 as well (the cyclic shifts), and the greedy finds it
    import itertools

    assert min_hamming(max_hamming_permutations(2, 4)) == 4
    every = np.array(list(itertools.permutations(range(4))))
    best = max(min_hamming(every[list(c)]) for c in itertools.combinations(range(24), 4))
    assert min_hamming(max_hamming_permutations(4, 4)) == best == 4
    assert np.array_equal(max_hamming_permutations(10, 5, seed=3), max_hamming_permutations(10, 5, seed=3))


def test_a_permutation_file_with_a_false_claim_is_refused(tmp_path: Path) -> None:
    perms = max_hamming_permutations(5, 9).tolist()
    assert min_hamming(np.array(perms)) == 9  # five rows of a Latin square: they differ everywhere
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"permutations": perms, "min_hamming": 2}))
    with pytest.raises(ValueError, match="claims a minimal Hamming distance of 2"):
        load_permutations(bad)
    bad.write_text(json.dumps({"permutations": [[0, 1, 2, 3, 4, 5, 6, 7, 7]]}))
    with pytest.raises(ValueError, match="permutation of 0..8"):
        load_permutations(bad)
    with pytest.raises(FileNotFoundError, match="tools/jigsaw_permutations.py"):
        load_permutations(tmp_path / "missing.json")


def test_jigsaw_puts_tile_perm_i_at_position_i() -> None:
    method = make("jigsaw")
    tiles = torch.arange(2 * 9, dtype=torch.float32).view(2, 9, 1)
    target = torch.tensor([3, 57])
    out = method.shuffle(tiles, target)
    for b in range(2):
        for i in range(9):
            assert int(out[b, i, 0]) == 9 * b + int(method.perms[target[b], i])


def test_every_tile_is_normalised_on_its_own() -> None:
    g = torch.Generator().manual_seed(0)  # seeded: a tile of small spread is scaled up, and its float32 mean with it
    tiles = (torch.rand(4, 9, 3, 6, 6, generator=g) * (torch.rand(4, 9, 3, 1, 1, generator=g) * 5 + 0.1)
             + torch.rand(4, 9, 3, 1, 1, generator=g))
    out = normalize_tiles(tiles)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), torch.zeros(4, 9, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(-2, -1), unbiased=False), torch.ones(4, 9, 3), atol=1e-3, rtol=0)


# ---- relative position ------------------------------------------------------------------------------------------

def test_the_neighbour_patch_sits_where_its_label_says() -> None:
    h = w = 3 * 6 + 2 * 3 + 2 * 2  # patch 6, gap 3, jitter 2
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(8, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(8, 1, h, w)
    x = torch.cat([rows, cols, torch.zeros_like(rows)], dim=1)  # a pixel's value is its position
    label = torch.arange(8)
    for jitter, tol in ((0, 0), (2, 4)):
        centre, other = relative_patches(x, label, 6, 3, jitter, generator=torch.Generator().manual_seed(1))
        dy = other[:, 0, 0, 0] - centre[:, 0, 0, 0]
        dx = other[:, 1, 0, 0] - centre[:, 1, 0, 0]
        for k, (r, c) in enumerate(NEIGHBOURS):
            assert abs(float(dy[k]) - (r - 1) * 9) <= tol and abs(float(dx[k]) - (c - 1) * 9) <= tol, (k, jitter)
    with pytest.raises(ValueError, match="smaller than the"):
        relative_patches(x[:, :, :20, :20], label, 6, 3, 2)


def test_chromatic_aberration_is_projected_out_or_dropped() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    axis = torch.tensor([-1.0, 2.0, -1.0]).view(1, 3, 1, 1)
    projected = remove_chroma(x, "project")
    torch.testing.assert_close((projected * axis).sum(dim=1), torch.zeros(4, 5, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(remove_chroma(projected, "project"), projected)  # a projection
    dropped = remove_chroma(x, "drop", generator=g)
    for b in range(4):
        kept = [c for c in range(3) if torch.equal(dropped[b, c], x[b, c])]
        assert len(kept) == 1
        others = [c for c in range(3) if c != kept[0]]
        assert float(dropped[b, others].std()) < 0.05 * float(x[b, kept[0]].std())
    assert torch.equal(remove_chroma(x, "none"), x)


# ---- colourisation ----------------------------------------------------------------------------------------------

def test_the_313_bins_cover_the_srgb_gamut() -> None:
    bins = gamut_bins()
    assert bins.shape == (313, 2) and len({tuple(b) for b in bins.tolist()}) == 313
    assert bool((bins % 10 == 0).all())
    g = torch.linspace(0, 1, 33)
    rgb = torch.stack(torch.meshgrid(g, g, g, indexing="ij")).reshape(1, 3, -1)
    ab = rgb_to_lab(rgb)[0, 1:].T  # every sRGB colour's ab
    nearest = torch.cdist(ab, bins).min(dim=1).values
    assert float(nearest.max()) <= 5 * math.sqrt(2) + 1e-4  # inside a bin's 10 x 10 cell


def test_soft_targets_sum_to_one_over_the_nearest_bins() -> None:
    bins = gamut_bins()
    ab = torch.tensor([[[3.0, 41.0], [-17.0, 0.0]], [[-55.0, 22.0], [60.0, -5.0]]]).permute(2, 0, 1)[None]
    for k in (1, 5, 10):
        z = soft_encode(ab, bins, neighbours=k, sigma=5.0)
        assert z.shape == (1, 313, 2, 2)
        torch.testing.assert_close(z.sum(dim=1), torch.ones(1, 2, 2))
        assert bool(((z > 0).sum(dim=1) <= k).all()) and bool((z >= 0).all())
        # the heaviest bin is the nearest one
        assert torch.equal(z.argmax(dim=1), quantize_ab(ab, bins))
    exact = bins[[7, 200]].T.reshape(1, 2, 1, 2)  # colours on bin centres, a narrow kernel: one-hot
    z = soft_encode(exact, bins, neighbours=5, sigma=0.5)
    assert z[0, 7, 0, 0] == pytest.approx(1.0, abs=1e-6) and z[0, 200, 0, 1] == pytest.approx(1.0, abs=1e-6)


def test_the_rebalancing_weights_have_expectation_one_under_the_prior() -> None:
    g = torch.Generator().manual_seed(0)
    prior = torch.rand(313, generator=g) ** 4
    prior = prior / prior.sum()
    for mix in (0.0, 0.5, 0.9):
        w = rebalancing_weights(prior, mix)
        assert float((prior * w).sum()) == pytest.approx(1.0, abs=1e-6)
    w = rebalancing_weights(prior, 0.5)
    order = prior.argsort()
    assert bool((w[order][1:] <= w[order][:-1] + 1e-6).all())  # rarer colours weigh more
    torch.testing.assert_close(rebalancing_weights(prior, 1.0), torch.ones(313))  # all uniform: no rebalancing
    smoothed = smooth_prior(torch.bincount(torch.tensor([5, 5, 9]), minlength=313).float(), gamut_bins())
    assert float(smoothed.sum()) == pytest.approx(1.0, abs=1e-6) and int(smoothed.argmax()) == 5


def test_annealed_mean_goes_from_the_mean_to_the_mode() -> None:
    bins = gamut_bins()
    logits = torch.zeros(1, 313, 1, 1)
    logits[0, 40], logits[0, 250] = 3.0, 2.0
    mode = annealed_mean(logits, bins, temperature=0.01)[0, :, 0, 0]
    torch.testing.assert_close(mode, bins[40], atol=1e-3, rtol=0)
    mean = annealed_mean(logits, bins, temperature=1.0)[0, :, 0, 0]
    torch.testing.assert_close(mean, (logits[0, :, 0, 0].softmax(0)[:, None] * bins).sum(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(annealed_mean(torch.zeros(1, 313, 1, 1), bins, 0.38)[0, :, 0, 0], bins.mean(0))


def test_colorization_counts_the_prior_once_and_skips_grey_images() -> None:
    torch.manual_seed(0)
    method = METHODS["colorization"](METHODS["colorization"].Config(**TINY["colorization"]))
    red = torch.zeros(4, 3, 1, 40, 40, dtype=torch.uint8)
    red[:, 0] = 200
    from vidssl.methods import EpochContext

    def batches(size: int) -> Any:
        yield {"video": red, "index": torch.arange(4)}

    ctx = EpochContext(0, 0, 0, 4, torch.device("cpu"), torch.Generator(), batches)
    method.on_epoch_start(ctx)
    lab = rgb_to_lab(red[:1, :, 0].float() / 255)
    red_bin = int(quantize_ab(lab[:, 1:, :1, :1], method.bins).flatten()[0])
    assert int(method.prior.argmax()) == red_bin
    assert float((method.prior * method.weights).sum()) == pytest.approx(1.0, abs=1e-5)
    prior = method.prior.clone()
    method.on_epoch_start(ctx)  # a second epoch keeps it
    assert torch.equal(method.prior, prior)
    grey = torch.full((2, 3, 1, 40, 40), 128, dtype=torch.uint8)
    loss, metrics = method({"video": grey, "index": torch.arange(2)})
    assert float(loss.detach()) == 0.0 and float(metrics["colour_images"]) == 0.0
    fresh = METHODS["colorization"](METHODS["colorization"].Config(**TINY["colorization"]))
    with pytest.raises(ValueError, match="no colour"):
        fresh.on_epoch_start(EpochContext(0, 0, 0, 2, torch.device("cpu"), torch.Generator(),
                                          lambda size: iter([{"video": grey, "index": torch.arange(2)}])))


def test_ab_error_auc_is_the_mean_over_integer_thresholds() -> None:
    error = torch.cat([torch.tensor([0.0, 1.0, 3.0, 149.5, 150.0, 150.2, 400.0]), torch.rand(50) * 200])
    thresholds = torch.arange(151, dtype=torch.float64)
    brute = (error.double()[:, None] <= thresholds).double().mean(1)  # within t, for t = 0..150
    assert torch.allclose(ab_error_auc(error).double(), brute, atol=1e-6)
    assert float(ab_error_auc(torch.tensor(0.0))) == 1.0 and float(ab_error_auc(torch.tensor(151.0))) == 0.0
    assert torch.allclose(ab_error_auc(error, 10).double(), (error.double()[:, None] <= thresholds[:11]).double()
                          .mean(1), atol=1e-6)


def test_colorization_own_task_is_the_rebalanced_auc_against_grey(monkeypatch: pytest.MonkeyPatch) -> None:
    """The own-task score is the paper's class-rebalanced AuC of the decoded colour, pooled over the test set: each
    colour bin present counts once, however many pixels it has; the grey answer is its chance level exactly, the
    truth scores 1, and grey images are left out."""
    from vidssl.pretext import score

    torch.manual_seed(0)
    method = make("colorization", pad=0, crop_scale=(1.0, 1.0)).eval()
    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    images[:] = torch.tensor([30, 160, 60], dtype=torch.uint8)[:, None, None]  # a green field
    images[:, 0, :8] = 220  # an orange strip: the top quarter of each image
    images[2, 1:] = images[2, 0]  # grey everywhere: no colour, left out
    lab = rgb_to_lab(images.float() / 255)
    truth = lab[:, 1:]
    monkeypatch.setattr(method, "views", lambda batch: lab)  # no flip: the answers below are per pixel
    strip_bin = int(quantize_ab(truth[:1, :, :1, :1], method.bins).flatten()[0])
    field_bin = int(quantize_ab(truth[:1, :, -1:, -1:], method.bins).flatten()[0])
    method.prior.fill_(0.0)
    method.prior[[strip_bin, field_bin]] = torch.tensor([0.25, 0.75])

    def answer(ab: torch.Tensor) -> Any:
        return lambda logits, size: ab.to(logits)

    monkeypatch.setattr(method, "decoded_ab", answer(truth))
    out = method.pretext_scores({"video": images[:, :, None], "index": torch.arange(3)})
    assert out["score"].shape == (2,) and torch.allclose(out["score"], torch.ones(2, dtype=torch.float64))
    counts = out["count_by_class"].sum(0)
    assert counts[strip_bin] == 2 * 8 * 32 and counts[field_bin] == 2 * 24 * 32 and counts.sum() == 2 * 32 * 32
    result = score(method, images, batch_size=4)
    assert result["score"] == pytest.approx(1.0) and result["classes"] == 2 and result["count"] == 2
    grey_strip = float(ab_error_auc(truth[0, :, 0, 0].norm()))
    grey_field = float(ab_error_auc(truth[0, :, -1, -1].norm()))
    assert result["chance"] == pytest.approx((grey_strip + grey_field) / 2, abs=1e-6)  # each bin once
    assert result["unbalanced"]["chance"] == pytest.approx(0.25 * grey_strip + 0.75 * grey_field, abs=1e-6)
    monkeypatch.setattr(method, "decoded_ab", answer(torch.zeros_like(truth)))
    grey = score(method, images, batch_size=4)
    assert grey["score"] == pytest.approx(grey["chance"]) and grey["chance"] < 1
    # right on the strip only: the balanced score counts its bin once, the unbalanced one by its area
    only_strip = torch.zeros_like(truth)
    only_strip[:, :, :8] = truth[:, :, :8]
    monkeypatch.setattr(method, "decoded_ab", answer(only_strip))
    strip = score(method, images, batch_size=4)
    assert strip["score"] == pytest.approx((1 + grey_field) / 2, abs=1e-6)
    assert strip["unbalanced"]["score"] == pytest.approx(0.25 + 0.75 * grey_field, abs=1e-6)
    method.prior.fill_(0.0)
    with pytest.raises(ValueError, match="not counted yet"):
        method.pretext_scores({"video": images[:, :, None], "index": torch.arange(3)})


def test_colorization_refuses_a_trunk_that_leaves_one_cell() -> None:
    """An ImageNet-stem ResNet at 32 px leaves a 1 x 1 map: one colour per image, which measured no better than
    grey (docs/results.md); the method says so instead of training it."""
    with pytest.raises(ValueError, match="one colour per image"):
        make("colorization", backbone="resnet18", crop_size=32)
    assert make("colorization", backbone="resnet18", crop_size=64).backbone.stride == 32  # 2 x 2 cells: allowed


def test_colorization_encoder_reads_only_lightness() -> None:
    method = make("colorization")
    assert method.encoder_input == "lab" and method.encoder().channels == (0,)
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, 1:] = torch.randn(2, 2, 32, 32)
    method.eval()
    torch.testing.assert_close(method.encoder()(x), method.encoder()(y))


# ---- context encoder --------------------------------------------------------------------------------------------

def test_the_hole_is_the_centre_shrunk_by_the_overlap() -> None:
    rows, cols = centre_box(128, 4)
    assert (rows.start, rows.stop) == (36, 92) and rows == cols  # the code: 64 px centre, a 56 px hole
    w = loss_weights(64, 4, 10.0)
    assert float(w[4:60, 4:60].unique().item()) == 1.0 and float(w[0, 0]) == float(w[63, 30]) == 10.0
    assert int((w == 10).sum()) == 64 * 64 - 56 * 56
    method = make("context_encoder")
    x = torch.rand(2, 3, 32, 32)
    masked, painted = method.paint(x)
    r, c = centre_box(32, 1)
    assert bool((masked[:, :, r, c] == 0).all()) and painted.shape == (2, 3, 16, 16)
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[r, c] = False
    from vidssl.nn.colour import imagenet_normalize

    torch.testing.assert_close(masked[..., keep], imagenet_normalize(x)[..., keep])


def test_the_painter_gets_the_adversarial_gradient_and_the_discriminator_only_its_own() -> None:
    torch.manual_seed(0)
    method = make("context_encoder", adversarial=0.5)
    method.train()
    batch = _batch(method)
    d_params, g_params = list(method.disc.parameters()), list(method.decoder.parameters())
    torch.manual_seed(1)
    loss, _ = method(batch)
    d_total = torch.autograd.grad(loss, d_params, retain_graph=True)
    g_total = torch.autograd.grad(loss, g_params)
    torch.manual_seed(1)  # the same views, the discriminator's loss alone
    x = method.images(batch)
    _, fake = method.paint(x)
    real = method.truth(x)
    ones, zeros = torch.ones(len(x), 1), torch.zeros(len(x), 1)
    d_loss = (F.binary_cross_entropy_with_logits(method.disc(real), ones)
              + F.binary_cross_entropy_with_logits(method.disc(fake.detach()), zeros))
    for a, b in zip(d_total, torch.autograd.grad(d_loss, d_params), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    l2 = (method.wmap * (fake - real).square()).mean()
    g_l2 = torch.autograd.grad(0.5 * l2, g_params)
    assert any(not torch.allclose(a, b, atol=1e-7) for a, b in zip(g_total, g_l2, strict=True))


# ---- exemplar ---------------------------------------------------------------------------------------------------

def test_batch_hard_triplet_closed_forms_and_a_reference() -> None:
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    assert float(batch_hard_triplet(torch.ones(6, 4), ids, margin=0.5)) == pytest.approx(0.5, abs=1e-5)
    z = torch.eye(3)[ids]  # members of an id equal, ids orthonormal
    assert float(batch_hard_triplet(z, ids, margin=2.0)) == pytest.approx(2.0 - math.sqrt(2), abs=1e-5)
    assert float(batch_hard_triplet(z, ids, margin=0.5)) == 0.0
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=g)
    ref = []
    for i in range(6):
        pos = max(float((z[i] - z[j]).norm()) for j in range(6) if j != i and ids[j] == ids[i])
        neg = min(float((z[i] - z[j]).norm()) for j in range(6) if ids[j] != ids[i])
        ref.append(max(0.0, pos - neg + 0.3))
    assert float(batch_hard_triplet(z, ids, margin=0.3)) == pytest.approx(sum(ref) / 6, abs=1e-5)
    with pytest.raises(ValueError, match="two members"):
        batch_hard_triplet(z[:3], ids[:3])


def test_exemplar_triplet_form_trains_and_the_classes_follow_the_dataset() -> None:
    torch.manual_seed(0)
    method = make("exemplar", loss="triplet", copies=2, dim=8)
    loss, metrics = method(_batch(method))
    assert torch.isfinite(loss) and 0 <= float(metrics["retrieval"]) <= 1
    from vidssl.methods import EpochContext

    wrong = make("exemplar")
    with pytest.raises(ValueError, match="model.num_classes=7"):
        wrong.on_epoch_start(EpochContext(0, 0, 0, 7, torch.device("cpu"), torch.Generator(), lambda s: iter([])))


def test_random_affine_without_range_is_the_identity() -> None:
    x = torch.rand(3, 3, 9, 9)
    torch.testing.assert_close(random_affine(x, 0.0, 0.0, (1.0, 1.0)), x, atol=1e-5, rtol=0)
    moved = random_affine(x, 20.0, 0.2, (0.7, 1.4), generator=torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and not torch.allclose(moved, x)


# ---- the shared evaluation: the layer read, the task itself, the images written -----------------------------------

def test_a_trunk_truncated_to_block_two_is_the_full_trunk_up_to_there() -> None:
    torch.manual_seed(0)
    net = ResNet(18, cifar_stem=True).eval()
    short = truncate(net, 2).eval()
    assert short.num_features == 128 and short.layer3 is None and short.layer4 is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = net.layer2(net.layer1(net.relu(net.bn1(net.conv1(x)))))
        torch.testing.assert_close(short.forward_features(x), want)
    assert truncate(net, 1).num_features == 64
    with pytest.raises(ValueError, match="at least one"):
        truncate(net, 0)


def _image_folder(root: Path, n: int = 6, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                cv2.imwrite(str(root / split / cls / f"{i}.png"), img)
    return root


def test_knn_reads_the_layer_and_pooling_it_is_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidssl.cli import main

    data = _image_folder(tmp_path / "imgs")
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", "--encoder", "random", "--backbone", "resnet18_cifar", "--data", str(data),
                 "--k", "3", "--layers", "2", "--pool", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dim"] == 128 * 4 and result["layers"] == 2 and result["pool"] == 2


def _save_checkpoint(tmp_path: Path, name: str, method: Any) -> Path:
    from vidssl.engine.config import to_dict

    cfg, _ = load_run_config(REPO_ROOT / "configs" / f"{name}_cifar.yaml", [f"model.{k}={v}" for k, v in {
        **TINY[name], "input": "images"}.items() if not isinstance(v, tuple)])
    path = tmp_path / f"{name}.pt"
    torch.save({"config": to_dict(cfg), "model": method.state_dict()}, path)
    return path


@pytest.mark.parametrize("name", ["rotation", "context_encoder"])
def test_eval_pretext_scores_a_checkpoints_own_task(name: str, tmp_path: Path) -> None:
    from vidssl.pretext import load_method, score

    torch.manual_seed(0)
    method = make(name)
    path = _save_checkpoint(tmp_path, name, method)
    loaded, config = load_method(path)
    assert config["method"] == name and not loaded.training
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    a, b = score(loaded, images, batch_size=2, seed=3), score(loaded, images, batch_size=2, seed=3)
    assert a == b  # the task's draws are seeded
    if name == "rotation":
        assert a["count"] == 20 and a["chance"] == pytest.approx(0.25) and set(a["per_class"]) == {0, 1, 2, 3}
        assert a["metric"] == "accuracy" and a["higher_is_better"]
    else:
        assert a["count"] == 5 and a["metric"] == "hole_mse" and not a["higher_is_better"] and a["chance"] > 0
    # a rotation classifier that answers the truth scores 1: the score measures the task
    if name == "rotation":
        loaded.task = lambda batch: (F.one_hot(torch.arange(8) % 4, 4).float(), torch.arange(8) % 4)
        assert score(loaded, images[:2], batch_size=2)["score"] == 1.0


def test_eval_pretext_balances_over_the_classes_of_the_whole_test_set() -> None:
    """A method that returns per-class sums (colourisation: pixels by colour bin) is scored as the mean over the
    classes present in the whole test set, summed across batch boundaries, not as a mean of per-sample means."""
    from vidssl.pretext import score

    class Balanced:
        pretext_metric, pretext_higher_is_better = "balanced", True

        def pretext_scores(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            # every sample: 9 units of class 0, all right; sample 0 alone adds 1 unit of class 1, wrong
            first = (batch["index"] == 0).float()
            count = torch.stack([torch.full_like(first, 9.0), first, torch.zeros_like(first)], dim=1)
            right = torch.stack([torch.full_like(first, 9.0), 0 * first, 0 * first], dim=1)
            return {"score": right.sum(1) / count.sum(1), "chance": torch.full_like(first, 0.5),
                    "score_by_class": right, "chance_by_class": count / 2, "count_by_class": count}

    images = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    out = score(Balanced(), images, batch_size=2)
    # pooled: class 0 all right, class 1 all wrong -> 0.5; balancing each batch and averaging would give 5/6
    assert out["score"] == pytest.approx(0.5) and out["chance"] == pytest.approx(0.5) and out["classes"] == 2
    assert out["unbalanced"]["score"] == pytest.approx((0.9 + 4) / 5) and out["count"] == 5 and "extra" not in out

    class Incomplete(Balanced):
        def pretext_scores(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = super().pretext_scores(batch)
            del out["chance_by_class"]
            return out

    with pytest.raises(ValueError, match="chance_by_class"):
        score(Incomplete(), images, batch_size=2)


def test_eval_pretext_refuses_a_method_without_a_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidssl.cli import main
    from vidssl.engine.config import to_dict
    from vidssl.train import resolve_config

    torch.manual_seed(0)
    cfg, _ = load_run_config(REPO_ROOT / "configs" / "simclr_cifar.yaml", [])
    cfg_dict = to_dict(cfg)
    cfg_dict["model"].update({k: list(v) if isinstance(v, tuple) else v for k, v in TINY["simclr"].items()})
    method = METHODS["simclr"](resolve_config(cfg_dict)[1])
    path = tmp_path / "simclr.pt"
    torch.save({"config": cfg_dict, "model": method.state_dict()}, path)
    wrong = tmp_path / "wrong.pt"  # weights of another shape than its config builds: a clear error
    torch.save({"config": cfg_dict, "model": {"net.backbone.conv1.weight": torch.zeros(1)}}, wrong)
    assert main(["eval", "pretext", "--checkpoint", str(wrong), "--data", str(tmp_path)]) == 1
    assert "do not fit the method its config builds" in capsys.readouterr().err
    data = _image_folder(tmp_path / "imgs", n=1)
    assert main(["eval", "pretext", "--checkpoint", str(path), "--data", str(data / "test")]) == 1
    assert "no pretext task of its own" in capsys.readouterr().err


def test_checkpoints_write_the_methods_images(tmp_path: Path) -> None:
    from vidssl.train import train

    over = [f"model.{k}={v}" for k, v in TINY["colorization"].items()]
    cfg, _ = load_run_config(REPO_ROOT / "configs" / "colorization_cifar.yaml", [
        *over, f"out_dir={tmp_path / 'run'}", "device=cpu", "schedule.steps=2", "ckpt.every=1", "log.every=1",
        "data.batch_size=2", "data.workers=0", "log.progress=false"])

    class Images(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(i)
            return {"video": torch.randint(0, 256, (3, 1, 32, 32), generator=g, dtype=torch.uint8), "index": i,
                    "label": 0}

    train(cfg, dataset=Images())
    written = sorted((tmp_path / "run" / "visuals" / "colourised").glob("*.png"))
    assert [p.name for p in written] == ["00000001.png", "00000002.png"]
    img = cv2.imread(str(written[0]))
    assert img is not None and img.shape[0] >= 3 * 32  # three rows: grey input, colourised, truth


@pytest.mark.parametrize("name", PRETEXT)
@pytest.mark.parametrize("kind", ["cifar", "video"])
def test_each_pretext_task_has_a_cifar_and_a_video_config(name: str, kind: str) -> None:
    cfg, model_cfg = load_run_config(REPO_ROOT / "configs" / f"{name}_{kind}.yaml", [])
    assert cfg.method == name and model_cfg.input == ("images" if kind == "cifar" else "video")
    text = (REPO_ROOT / "configs" / f"{name}_{kind}.yaml").read_text()
    assert text.startswith("#")  # the config says which recipe it follows
