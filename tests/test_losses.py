"""The shared losses (vidssl.losses) against closed forms and hand-written references; the gathered ones also
across two gloo processes (tests/test_shared_collectives.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidssl.losses import cosine_regression, nt_xent


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
