"""The shared losses (vidssl.losses) against closed forms and hand-written references; the gathered ones also
across two gloo processes (tests/test_shared_collectives.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.losses import (
    barlow_twins_loss,
    batch_info_nce,
    cosine_regression,
    nce,
    negative_cosine,
    nt_xent,
    off_diagonal,
    supcon,
    vicreg_loss,
)


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's loss written out: the 2N x 2N cosine matrix, the diagonal removed, row i's positive its other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, positive)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_closed_form_on_orthogonal_pairs(t: float) -> None:
    # both views of image i are e_i: the positive scores 1/t, the 2B - 2 other embeddings score 0
    b = 3
    z = torch.eye(8, dtype=torch.float64)[:b]
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * b - 2)))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-9)


def test_nt_xent_equals_the_written_out_reference_with_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    got = nt_xent(z1, z2, 0.3)
    want = nt_xent_reference(z1, z2, 0.3)
    torch.testing.assert_close(got, want)
    ga = torch.autograd.grad(got, (z1, z2))
    gb = torch.autograd.grad(want, (z1, z2))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
    # collapse: every embedding equal gives log(2B - 1), chance among the 2B - 1 candidates
    same = torch.ones(4, 3, dtype=torch.float64)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(7))


def test_nt_xent_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both be"):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(2, 3), torch.ones(2, 3), 0.0)


def test_cosine_regression_closed_forms_and_stop_gradient() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    aligned = torch.tensor([[5.0, 0.0], [0.0, 0.1], [1.0, 0.0]])
    orthogonal = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -2.0]])
    assert cosine_regression(p, aligned).item() == pytest.approx(0.0, abs=1e-7)
    assert cosine_regression(p, orthogonal).item() == pytest.approx(2.0)
    assert cosine_regression(p, -aligned).item() == pytest.approx(4.0)
    target = aligned.clone().requires_grad_(True)
    cosine_regression(p, target + 0.1).backward()
    assert target.grad is None and p.grad is not None  # the target is detached: BYOL's and SimSiam's stop-gradient
    # equals the squared distance of the normalised vectors
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    want = (F.normalize(a, dim=1) - F.normalize(b, dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(cosine_regression(a, b), want)


def test_negative_cosine_closed_forms_and_stop_gradient() -> None:
    """SimSiam's D: -1 / 0 / 1 for a prediction parallel / orthogonal / opposite to z; z gets no gradient."""
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    for z, want in ((torch.tensor([[1.0, 0.0], [0.0, 3.0]]), -1.0), (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0.0),
                    (torch.tensor([[-1.0, 0.0], [0.0, -0.5]]), 1.0)):
        z = z.clone().requires_grad_(True)
        loss = negative_cosine(p, z)
        assert loss.item() == pytest.approx(want, abs=1e-7)
        loss.backward()
        assert z.grad is None and p.grad is not None
        p.grad = None


def test_off_diagonal_is_every_entry_but_the_diagonal_in_row_order() -> None:
    m = torch.arange(16.0).view(4, 4)
    want = torch.tensor([v for i in range(4) for j in range(4) if i != j for v in [m[i, j]]])
    assert torch.equal(off_diagonal(m), want)
    with pytest.raises(ValueError, match="square"):
        off_diagonal(torch.zeros(2, 3))


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """The authors' main.py written out: BatchNorm1d(affine=False) in train mode, c / N, the two sums."""
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).double()
    c = bn(z1).t() @ bn(z2) / z1.shape[0]
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
    return on + lambd * off


def test_barlow_twins_closed_forms_and_reference() -> None:
    # constant embeddings standardise to 0: C = 0, the loss is D (RECIPES.md section 6)
    const = torch.ones(6, 5, dtype=torch.float64)
    assert barlow_twins_loss(const, const.clone()).item() == pytest.approx(5.0)
    # identical views with decorrelated, standardised dimensions: C = I, the loss is 0
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=g, dtype=torch.float64)
    z = torch.linalg.qr(a - a.mean(dim=0))[0] * math.sqrt(8)  # zero-mean orthogonal columns of unit variance
    assert barlow_twins_loss(z, z.clone(), eps=1e-12).item() == pytest.approx(0.0, abs=1e-9)
    z1 = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    got, want = barlow_twins_loss(z1, z2, 0.3), barlow_reference(z1, z2, 0.3)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(want, (z1, z2)), strict=True):
        torch.testing.assert_close(a, b)


def vicreg_reference(x: torch.Tensor, y: torch.Tensor, average: bool = True) -> torch.Tensor:
    """main_vicreg.py's forward written out on one process (batch_size = N)."""
    n, d = x.shape
    repr_loss = ((x - y) ** 2).mean()
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(torch.relu(1 - std_x)) + torch.mean(torch.relu(1 - std_y))
    std_loss = std_loss / 2 if average else std_loss
    cx, cy = x.t() @ x / (n - 1), y.t() @ y / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = (cx[off] ** 2).sum() / d + (cy[off] ** 2).sum() / d
    return 25 * repr_loss + 25 * std_loss + cov_loss


def test_vicreg_closed_forms_and_reference() -> None:
    const = torch.ones(6, 5, dtype=torch.float64)
    loss, terms = vicreg_loss(const, const.clone())
    assert loss.item() == pytest.approx(24.75)  # 25 (1 - sqrt(1e-4)), the official averaging
    assert vicreg_loss(const, const.clone(), average_variance=False)[0].item() == pytest.approx(49.5)
    assert float(terms["invariance"]) == 0.0 and float(terms["covariance"]) == 0.0
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for average in (True, False):
        got, want = vicreg_loss(z1, z2, average_variance=average)[0], vicreg_reference(z1, z2, average)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(want, (z1, z2)), strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.ones(1, 3), torch.ones(1, 3))


def test_sinkhorn_rows_sum_to_one_and_equal_scores_give_uniform_codes() -> None:
    from vidssl.losses import sinkhorn

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 10, generator=g)
    q = sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(16))  # every sample's codes: exactly a distribution
    assert (q >= 0).all()
    cols = q.sum(dim=0)  # prototype masses tend to B / K = 1.6 only as iterations grow
    more = sinkhorn(scores, 0.05, 200).sum(dim=0)
    assert (more - 1.6).abs().max() < (cols - 1.6).abs().max() and (more - 1.6).abs().max() < 5e-3
    torch.testing.assert_close(sinkhorn(torch.full((4, 8), 3.0), 0.05, 3), torch.full((4, 8), 1 / 8))
    # cosine scores of 1 give e^(1 / 0.05) = e^20, beyond float16; the codes come out float32 and finite under
    # autocast, from half-precision scores
    cosines = F.normalize(scores, dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        big = sinkhorn(cosines.bfloat16(), 0.05, 3)
    assert big.dtype == torch.float32 and torch.isfinite(big).all()
    torch.testing.assert_close(big.sum(dim=1), torch.ones(16))


def test_swapped_prediction_is_ln_k_at_uniform_scores() -> None:
    from vidssl.losses import sinkhorn, swapped_prediction

    k, b = 512, 6
    scores = [torch.zeros(b, k) for _ in range(3)]
    codes = {0: sinkhorn(scores[0]), 1: sinkhorn(scores[1])}
    assert swapped_prediction(scores, codes, 0.1).item() == pytest.approx(math.log(512), rel=1e-6)  # 6.238
    # a crop predicting its partner's codes exactly (one-hot codes, scores sharply on them) costs ~0
    onehot = F.one_hot(torch.arange(b) % k, k).float()
    sharp = [onehot * 100.0, onehot * 100.0]
    assert swapped_prediction(sharp, {0: onehot, 1: onehot}, 0.1).item() == pytest.approx(0.0, abs=1e-6)


def iic_reference(p1: np.ndarray, p2: np.ndarray, eps: float = 2.220446049250313e-16) -> float:
    """IIC's IID_loss written out in numpy (lamb = 1)."""
    joint = p1.T @ p2 / len(p1)
    joint = (joint + joint.T) / 2
    joint /= joint.sum()
    pi = np.broadcast_to(joint.sum(1, keepdims=True), joint.shape)
    pj = np.broadcast_to(joint.sum(0, keepdims=True), joint.shape)
    joint, pi, pj = (np.maximum(v, eps) for v in (joint, pi, pj))
    return float(-(joint * (np.log(joint) - np.log(pj) - np.log(pi))).sum())


def test_iic_loss_closed_forms_reference_and_gradient() -> None:
    from vidssl.losses import iic_loss

    k = 4
    onehot = F.one_hot(torch.arange(12) % k, k).double()
    assert iic_loss(onehot, onehot).item() == pytest.approx(-math.log(k))  # one-to-one, uniform marginals
    uniform = torch.full((12, k), 1.0 / k, dtype=torch.float64)
    assert iic_loss(onehot, uniform).item() == pytest.approx(0.0, abs=1e-12)  # independent views
    collapsed = F.one_hot(torch.zeros(12, dtype=torch.long), k).double()
    assert iic_loss(collapsed, collapsed).item() == pytest.approx(0.0, abs=1e-12)  # everything in one cluster
    g = torch.Generator().manual_seed(0)
    p1 = torch.randn(9, k, generator=g, dtype=torch.float64).softmax(1).requires_grad_(True)
    p2 = torch.randn(9, k, generator=g, dtype=torch.float64).softmax(1).requires_grad_(True)
    assert iic_loss(p1, p2).item() == pytest.approx(iic_reference(p1.detach().numpy(), p2.detach().numpy()))
    assert torch.autograd.gradcheck(lambda a, b: iic_loss(a, b), (p1, p2))
    with pytest.raises(ValueError, match="two \\(B, K\\) assignments"):
        iic_loss(p1, p2[:, :2])


def supcon_reference(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, t: float, base: float) -> torch.Tensor:
    """SupConLoss (contrast_mode 'all') written out: features (B, 2, D) unbound view-major, the self-contrast
    removed from the denominator, the mean log-probability over each anchor's positives, times -(T / base_T)."""
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
    labels = torch.cat([y, y])
    n = z.shape[0]
    total = z.new_zeros(())
    for i in range(n):
        logits = [(z[i] @ z[a]) / t for a in range(n)]
        denom = torch.logsumexp(torch.stack([logits[a] for a in range(n) if a != i]), dim=0)
        pos = [a for a in range(n) if a != i and labels[a] == labels[i]]
        total = total + sum(logits[p] - denom for p in pos) / len(pos)
    return -(t / base) * total / n


def test_supcon_closed_form_and_reference() -> None:
    b = 5
    same = torch.ones(b, 4, dtype=torch.float64)
    one_class = torch.zeros(b, dtype=torch.long)
    assert supcon(same, same.clone(), one_class, 0.07, 0.07).item() == pytest.approx(math.log(2 * b - 1))
    assert supcon(same, same.clone(), one_class, 0.1, 0.07).item() == pytest.approx(math.log(9) * 0.1 / 0.07)
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    got, want = supcon(z1, z2, y, 0.2, 0.07), supcon_reference(z1, z2, y, 0.2, 0.07)
    torch.testing.assert_close(got, want)
    for a, b_ in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(want, (z1, z2)), strict=True):
        torch.testing.assert_close(a, b_)
    # every sample its own class: SupCon is NT-Xent (times T / base_T)
    distinct = torch.arange(6)
    torch.testing.assert_close(supcon(z1, z2, distinct, 0.2, 0.2), nt_xent(z1, z2, 0.2))


def test_batch_info_nce_closed_form_and_its_2t_factor() -> None:
    """q = k on orthogonal keys: the positive scores 1 / T, the N - 1 others 0; times 2 T (MoCo v3's code)."""
    n, t = 5, 0.2
    q = torch.eye(8, dtype=torch.float64)[:n]
    want = 2 * t * math.log(1 + (n - 1) * math.exp(-1 / t))
    assert batch_info_nce(q, q.clone(), t).item() == pytest.approx(want, rel=1e-9)
    k = q.clone().requires_grad_(True)
    batch_info_nce(q.clone().requires_grad_(True), k, t).backward()
    assert k.grad is None  # keys come from the momentum encoder: no gradient


def test_nce_at_the_noise_probability() -> None:
    """NPID's NCE with model = noise = 1 / N: log(K + 1) + K log((K + 1) / K), 9.3179 for K 4096."""
    n, k = 10000, 4096
    probs = torch.full((3, 1 + k), 1 / n, dtype=torch.float64)
    want = math.log(k + 1) + k * math.log((k + 1) / k)
    assert nce(probs, n, eps=0.0).item() == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(9.3179, abs=1e-4)
    # a confident model (its own entry likely, the noise entries not) costs less
    sharp = probs.clone()
    sharp[:, 0], sharp[:, 1:] = 0.5, 1e-6
    assert nce(sharp, n).item() < want
