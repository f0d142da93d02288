"""The offline clustering layer (``vidssl.nn.cluster``) against references written here, and DeepCluster v1 / v2
on top of it: labels from the epoch hook, the re-initialised top layer, the memory, the prototypes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.methods import METHODS, EpochContext
from vidssl.nn.cluster import _split_empty, balancing_weights, kmeans, nmi, pca_whiten


def _blobs(n_per: int = 30, k: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + torch.randn(k * n_per, dim, generator=g) * 0.1, labels


def _lloyd_reference(x: np.ndarray, c: np.ndarray, iters: int, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lloyd iterations in float64 from given centroids (no empty clusters in the cases used)."""
    for _ in range(iters):
        if spherical:
            a = (x @ c.T).argmax(1)
        else:
            a = ((x[:, None] - c[None]) ** 2).sum(2).argmin(1)
        c = np.stack([x[a == j].mean(0) for j in range(len(c))])
        if spherical:
            c /= np.linalg.norm(c, axis=1, keepdims=True)
    a = (x @ c.T).argmax(1) if spherical else ((x[:, None] - c[None]) ** 2).sum(2).argmin(1)
    return c, a


@pytest.mark.parametrize("spherical", [False, True])
def test_kmeans_matches_lloyd_from_the_same_start_and_recovers_blobs(spherical: bool) -> None:
    x, truth = _blobs()
    if spherical:
        x = F.normalize(x, dim=1)
    g = torch.Generator().manual_seed(3)
    centroids, assign = kmeans(x, 4, iters=10, spherical=spherical, generator=g)
    start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:4]].double().numpy()
    ref_c, ref_a = _lloyd_reference(x.double().numpy(), start, 10, spherical)
    np.testing.assert_allclose(centroids.numpy(), ref_c, atol=1e-5)
    assert (assign.numpy() == ref_a).all()
    # final assignments are to the final centroids
    dist = torch.cdist(x, centroids) if not spherical else -(x @ centroids.t())
    assert torch.equal(assign, dist.argmin(1))
    if not spherical:  # well separated blobs: some start reaches the true partition
        best = max(nmi(kmeans(x, 4, 10, generator=torch.Generator().manual_seed(s))[1], truth) for s in range(5))
        assert best == pytest.approx(1.0)


def test_empty_cluster_is_split_as_faiss() -> None:
    c = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [9.0, 9.0, 9.0]])
    counts = torch.tensor([6, 0, 2])
    _split_empty(c, counts, torch.Generator().manual_seed(0))
    eps = 1 / 1024
    # cluster 0 (size 6) is the only one likely enough to donate: p ~ (6 - 1) vs (2 - 1); either way a split
    donor = 0 if torch.allclose(c[1], torch.tensor([1 + eps, 2 * (1 - eps), 3 * (1 + eps)])) else 2
    base = torch.tensor([1.0, 2.0, 3.0]) if donor == 0 else torch.tensor([9.0, 9.0, 9.0])
    torch.testing.assert_close(c[1], base * torch.tensor([1 + eps, 1 - eps, 1 + eps]))
    torch.testing.assert_close(c[donor], base * torch.tensor([1 - eps, 1 + eps, 1 - eps]))
    assert int(counts.sum()) == 8 and int(counts[1]) > 0


def test_pca_whiten_against_a_reference() -> None:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g)
    x = torch.randn(500, 6, generator=g) @ mix + 3.0  # correlated, not centred
    out = pca_whiten(x, 4)
    assert out.shape == (500, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(500))
    xd = x.double().numpy()
    centred = xd - xd.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(xd))
    proj = centred @ vectors[:, ::-1][:, :4] / np.sqrt(values[::-1][:4])
    np.testing.assert_allclose(np.cov(proj.T, bias=True), np.eye(4), atol=1e-8)  # whitened before normalising
    ref = proj / np.linalg.norm(proj, axis=1, keepdims=True)
    np.testing.assert_allclose(out.double().numpy() @ out.double().numpy().T, ref @ ref.T, atol=1e-5)  # signs free
    with pytest.raises(ValueError, match="dim <= D"):
        pca_whiten(x, 7)


def test_balancing_weights_give_the_uniform_over_clusters_expectation() -> None:
    assign = torch.tensor([0, 1, 1, 1, 3, 3])  # cluster 2 empty
    w = balancing_weights(assign, 4)
    torch.testing.assert_close(w, torch.tensor([2.0, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0]))
    assert float(w.mean()) == pytest.approx(1.0)
    values = torch.tensor([1.0, 2.0, 4.0, 6.0, 10.0, 20.0])
    uniform_over_clusters = (1.0 + (2 + 4 + 6) / 3 + (10 + 20) / 2) / 3
    assert float((w * values).mean()) == pytest.approx(uniform_over_clusters)


def test_nmi_closed_forms() -> None:
    a = torch.tensor([0, 0, 1, 1, 2, 2])
    assert nmi(a, torch.tensor([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)  # the same partition, renamed
    assert nmi(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)  # independent
    # a = two pairs, b merges them: I = H(b) = ln 2, H(a) = ln 2 + ... -> ln2 / sqrt(ln4 ln2) = 1 / sqrt(2)
    assert nmi(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1])) == pytest.approx(1 / math.sqrt(2))


# ---- DeepCluster ----------------------------------------------------------------------------------------------

def _groups(n_per: int = 4, k: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """k distinct random images, each repeated n_per times: uint8 (k n_per, 3, 1, size, size) and the group ids."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (k, 3, 1, size, size), generator=g, dtype=torch.uint8)
    ids = torch.arange(k).repeat_interleave(n_per)
    return images[ids], ids


def _ctx(video: torch.Tensor, epoch: int = 0, start: int = 0, forgotten: list[Any] | None = None) -> EpochContext:
    n = video.shape[0]

    def batches(size: int) -> Any:
        for i in range(0, n, size):
            yield {"video": video[i:i + size], "index": torch.arange(i, min(n, i + size))}

    return EpochContext(epoch, 0, start, n, torch.device("cpu"), torch.Generator().manual_seed(epoch), batches,
                        forget=(lambda ps: forgotten.extend(ps)) if forgotten is not None else (lambda ps: None))


def _deepcluster(**cfg: Any) -> Any:
    cls = METHODS["deepcluster"]
    torch.manual_seed(0)
    return cls(cls.Config(**{"backbone": "resnet18", "crop_size": 32, "pass_batch": 5, **cfg}))


def test_deepcluster_v1_labels_reset_and_balanced_loss() -> None:
    video, ids = _groups()
    dc = _deepcluster(num_clusters=(3,), pca_dim=8)
    forgotten: list[Any] = []
    with torch.no_grad():
        dc.top.weight.fill_(1.0)
    dc.on_epoch_start(_ctx(video, forgotten=forgotten))
    labels = dc.labels[0]
    assert labels.shape == (12,) and nmi(labels, ids) == pytest.approx(1.0)  # identical images, one cluster each
    top = dc.top.weight.detach()
    assert float(dc.top.bias.detach().abs().max()) == 0 and 0.005 < float(top.std()) < 0.015  # re-initialised
    assert {id(p) for p in forgotten} == {id(p) for p in dc.top.parameters()}  # and its optimiser state dropped
    torch.testing.assert_close(dc.weights, balancing_weights(labels, 3))
    # the loss is the balanced cross-entropy of the top layer on the cluster labels
    batch = {"video": video[[0, 5, 9]], "index": torch.tensor([0, 5, 9])}
    torch.manual_seed(1)
    loss, metrics = dc(batch)
    torch.manual_seed(1)
    from vidssl.data.augment import to_float
    from vidssl.nn.colour import normalize_input
    x = normalize_input(dc.augment(to_float(batch["video"]))[:, :, 0], "rgb")
    ce = F.cross_entropy(dc.top(dc.backbone(x)), labels[[0, 5, 9]], reduction="none")
    torch.testing.assert_close(loss, (ce * dc.weights[[0, 5, 9]]).mean())
    assert metrics["cluster_entropy"] == pytest.approx(1.0) and "nmi_previous" not in metrics
    # the next epoch re-clusters and reports the stability; a resumed epoch keeps its clusters
    dc.on_epoch_start(_ctx(video, epoch=1))
    assert float(dc.stats[1]) == pytest.approx(1.0)
    before = dc.top.weight.clone()
    dc.on_epoch_start(_ctx(video, epoch=1, start=2))
    assert torch.equal(before, dc.top.weight)
    # a fresh model loads the dataset-sized buffers of a checkpoint
    fresh = _deepcluster(num_clusters=(3,), pca_dim=8)
    fresh.load_state_dict(dc.state_dict())
    assert torch.equal(fresh.labels, dc.labels) and torch.equal(fresh.weights, dc.weights)


def test_deepcluster_v1_needs_its_clusters() -> None:
    video, _ = _groups()
    with pytest.raises(RuntimeError, match="no cluster labels yet"):
        _deepcluster(num_clusters=(3,))({"video": video[:2], "index": torch.arange(2)})
    with pytest.raises(ValueError, match="v1 has one clustering"):
        _deepcluster(num_clusters=(3, 3))
    with pytest.raises(ValueError, match=r"model\.num_clusters=\[20\].*12 samples"):
        _deepcluster(num_clusters=(20,)).on_epoch_start(_ctx(video))


def test_deepcluster_v2_memory_prototypes_and_frozen_centroids() -> None:
    video, _ = _groups(n_per=4, k=3)
    dc = _deepcluster(version=2, projector=(32, 16), num_clusters=(3, 4, 2), kmeans_iters=5, num_local=1,
                      local_size=16, input="images")
    dc.on_epoch_start(_ctx(video))
    assert [tuple(b.bank.shape) for b in dc.memory] == [(12, 16), (12, 16)]
    assert dc.labels.shape == (3, 12)
    for j, proto in enumerate(dc.prototypes):
        torch.testing.assert_close(proto.weight.norm(dim=1), torch.ones(proto.weight.shape[0]))  # centroids
        bank = dc.memory[j % 2].bank
        assert torch.equal(dc.labels[j], (bank @ proto.weight.t()).argmax(1))  # labels: the nearest centroid
    dc.train()
    batch = {"video": video[[0, 4, 8]], "index": torch.tensor([0, 4, 8])}
    loss, _ = dc(batch)
    loss.backward()
    assert all(p.weight.grad is not None for p in dc.prototypes)
    dc.before_step(0)
    assert all(p.weight.grad is None for p in dc.prototypes)  # never trained
    old = dc.memory[0].bank.clone()
    dc.after_step(0)
    changed = (dc.memory[0].bank != old).any(dim=1).nonzero().flatten().tolist()
    assert changed == [0, 4, 8]  # this step's embeddings replace the batch's memory rows (momentum 0)


# ---- SeLa ---------------------------------------------------------------------------------------------------

def _sela_reference(probs: np.ndarray, lam: float, tol: float) -> np.ndarray:
    """SeLa's optimize_L_sk as the paper states it, in numpy: Sinkhorn on P^lam, then the arg-max per sample."""
    ps = probs.T ** lam  # (K, N)
    k, n = ps.shape
    r, c = np.ones(k) / k, np.ones(n) / n
    err, it = np.inf, 0
    while err > tol:
        r = (1 / k) / (ps @ c)
        c_new = (1 / n) / (r @ ps)
        if it % 10 == 0:
            err = np.abs(c / c_new - 1).sum()
        c, it = c_new, it + 1
    return (ps * c[None] * r[:, None]).argmax(0)


def test_self_label_marginals_reference_and_equipartition() -> None:
    from vidssl.losses import self_label
    from vidssl.losses.clustering import self_label_scalings

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 6, generator=g, dtype=torch.float64)
    log_p = F.log_softmax(logits, dim=1)
    p, r, c, _ = self_label_scalings(log_p, lam=10.0, tolerance=1e-6)
    q = r[:, None] * p * c[None]
    torch.testing.assert_close(q.sum(0), torch.full((60,), 1 / 60, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(q.sum(1), torch.full((6,), 1 / 6, dtype=torch.float64), rtol=1e-5, atol=0)
    labels, _ = self_label(log_p, lam=10.0)
    assert (labels.numpy() == _sela_reference(log_p.exp().numpy(), 10.0, 1e-2)).all()
    # every sample prefers cluster 0 (a collapsed classifier): the labels are still spread over all clusters
    biased = F.log_softmax(torch.randn(60, 6, generator=g, dtype=torch.float64) * 0.1
                           + torch.tensor([3.0, 0, 0, 0, 0, 0], dtype=torch.float64), dim=1)
    counts = torch.bincount(self_label(biased, lam=10.0, tolerance=1e-8)[0], minlength=6)
    # 10 each in the soft solution; its arg-max keeps every cluster within about a third of that (the arg-max
    # of the raw probabilities would put all 60 in cluster 0)
    assert counts.min() >= 6 and counts.max() <= 14, counts
    # a clear preference per sample with N = K: the labels are that preference
    perm = torch.randperm(6, generator=g)
    sharp = F.log_softmax(F.one_hot(perm, 6).double() * 5, dim=1)
    assert torch.equal(self_label(sharp, lam=10.0)[0], perm)


def _sela(**cfg: Any) -> Any:
    cls = METHODS["sela"]
    torch.manual_seed(0)
    return cls(cls.Config(**{"backbone": "resnet18", "crop_size": 32, "pass_batch": 5, **cfg}))


def test_sela_random_equipartition_then_one_head_per_epoch() -> None:
    video, _ = _groups(n_per=4, k=3)
    sela = _sela(heads=3, num_clusters=3)
    sela.on_epoch_start(_ctx(video, epoch=0))
    assert sela.labels.shape == (3, 12)
    for h in range(3):
        assert torch.bincount(sela.labels[h], minlength=3).tolist() == [4, 4, 4]  # equipartitions
    before = sela.labels.clone()
    sela.on_epoch_start(_ctx(video, epoch=1))  # relabels head 1 only (the code's nh = epoch % hc)
    assert torch.equal(sela.labels[0], before[0]) and torch.equal(sela.labels[2], before[2])
    assert float(sela.stats[0]) >= 1
    # the loss: the mean over heads of each head's cross-entropy on its labels
    batch = {"video": video[[1, 6]], "index": torch.tensor([1, 6])}
    torch.manual_seed(3)
    loss, metrics = sela(batch)
    torch.manual_seed(3)
    f = sela._features(batch["video"])
    ref = sum(F.cross_entropy(head(f), sela.labels[h, [1, 6]]) for h, head in enumerate(sela.heads)) / 3
    torch.testing.assert_close(loss, ref)
    assert set(metrics) == {"sinkhorn_iterations", "nmi_previous"}
    fresh = _sela(heads=3, num_clusters=3)
    fresh.load_state_dict(sela.state_dict())
    assert torch.equal(fresh.labels, sela.labels)
    with pytest.raises(RuntimeError, match="no self-labels yet"):
        _sela()(batch)


def test_sela_label_init_features_labels_every_head_from_the_initial_network() -> None:
    from vidssl.losses import self_label

    video, _ = _groups(n_per=4, k=3)
    sela = _sela(heads=3, num_clusters=3, label_init="features")
    torch.manual_seed(7)
    sela.on_epoch_start(_ctx(video, epoch=0))
    # the reference: the same augmentation draws through the same network, each head's own Sinkhorn labels
    ref = _sela(heads=3, num_clusters=3)
    ref.train()
    torch.manual_seed(7)
    with torch.no_grad():
        f = torch.cat([ref._features(video[i:i + 5]) for i in range(0, 12, 5)])
        for h in range(3):
            want, _ = self_label(F.log_softmax(ref.heads[h](f), dim=1), 10.0, 1e-2)
            assert torch.equal(sela.labels[h], want), h
    # the heads differ, so their labels do too (not one labelling copied), and none is the random start
    assert not torch.equal(sela.labels[0], sela.labels[1])
    assert float(sela.stats[0]) >= 1
    # a resumed run (labels from its checkpoint, step > 0) never relabels at start; epoch 1 relabels head 1 only
    before = sela.labels.clone()
    sela.on_epoch_start(_ctx(video, epoch=0, start=3))
    assert torch.equal(sela.labels, before)
    sela.on_epoch_start(_ctx(video, epoch=1))
    assert torch.equal(sela.labels[0], before[0]) and torch.equal(sela.labels[2], before[2])
    with pytest.raises(ValueError, match="label_init"):
        _sela(label_init="zeros")


# ---- PCL ----------------------------------------------------------------------------------------------------

def test_concentration_as_pcl_run_kmeans() -> None:
    from vidssl.methods.pcl import concentration

    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(40, 4, generator=g), dim=1)
    centroids, assign = kmeans(x, 6, 10, generator=g)
    assign[0], assign[1:][assign[1:] == 5] = 5, 4  # cluster 5: one member (takes the largest phi)
    phi = concentration(x, centroids, assign, 0.2)
    # the code's loop, in numpy
    xs, cs, a = x.double().numpy(), centroids.double().numpy(), assign.numpy()
    dens = np.zeros(6)
    for i in range(6):
        d = np.linalg.norm(xs[a == i] - cs[i], axis=1)
        if len(d) > 1:
            dens[i] = d.mean() / np.log(len(d) + 10)
    dmax = dens.max()
    dens[[i for i in range(6) if (a == i).sum() <= 1]] = dmax
    dens = dens.clip(np.percentile(dens, 10), np.percentile(dens, 90))
    dens = 0.2 * dens / dens.mean()
    np.testing.assert_allclose(phi.numpy(), dens, rtol=1e-5)


def test_proto_nce_reference() -> None:
    from vidssl.losses import proto_nce

    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=1)
    protos = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    phi = torch.rand(8, generator=g, dtype=torch.float64) + 0.1
    pos, neg = torch.tensor([2, 0, 2]), torch.tensor([5, 7])
    loss = proto_nce(q, protos, pos, neg, phi)
    chosen = [2, 0, 2, 5, 7]
    ref = 0.0
    for i in range(3):
        logits = torch.stack([q[i] @ protos[j] / phi[j] for j in chosen])
        ref += -(logits[i] - torch.logsumexp(logits, 0)) / 3
    torch.testing.assert_close(loss, ref)


def _pcl(**cfg: Any) -> Any:
    cls = METHODS["pcl"]
    torch.manual_seed(0)
    return cls(cls.Config(**{"crop_size": 32, "dim": 16, "queue_size": 16, "input": "images", "num_clusters": (3, 4),
                             "warmup_epochs": 1, "proto_negatives": 2, "kmeans_restarts": 2, "pass_batch": 5,
                             "bn": "none", **cfg}))


def test_pcl_warms_up_as_moco_then_adds_protonce() -> None:
    from vidssl.losses import proto_nce

    video, ids = _groups(n_per=4, k=3)
    noise = torch.randint(-12, 13, video.shape, generator=torch.Generator().manual_seed(5))
    video = (video.int() + noise).clamp(0, 255).to(torch.uint8)  # members near, not equal (phi > 0)
    pcl = _pcl()
    pcl.on_epoch_start(_ctx(video, epoch=0))  # warm-up: nothing clustered, MoCo's loss alone
    assert pcl.prototypes.shape[0] == 0
    batch = {"video": video[[0, 4, 8]], "index": torch.tensor([0, 4, 8])}
    pcl.eval()
    torch.manual_seed(2)
    loss, metrics = pcl(batch)
    torch.manual_seed(2)
    moco_loss, _, _ = pcl.contrast(batch)
    torch.testing.assert_close(loss, moco_loss)
    assert "proto_nce" not in metrics
    pcl.on_epoch_start(_ctx(video, epoch=1))
    assert pcl.labels.shape == (2, 12) and pcl.prototypes.shape == (7, 16) and pcl.phi.shape == (7,)
    assert nmi(pcl.labels[0], ids) == pytest.approx(1.0)  # identical images share a cluster (k = 3 groups)
    assert int(pcl.labels[1].min()) >= 3  # the second clustering's ids follow the first's 3
    torch.testing.assert_close(pcl.prototypes.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(pcl.phi[:3].mean(), torch.tensor(pcl.temperature))
    seen: list[tuple[Tensor, Tensor]] = []

    def spy(q: Any, protos: Any, pos: Any, neg: Any, phi: Any) -> Any:
        seen.append((pos, neg))
        return proto_nce(q, protos, pos, neg, phi)

    import vidssl.methods.pcl as pcl_module
    original = pcl_module.proto_nce
    pcl_module.proto_nce = spy  # type: ignore[assignment]
    try:
        loss, metrics = pcl(batch)
    finally:
        pcl_module.proto_nce = original  # type: ignore[assignment]
    assert "proto_nce" in metrics and float(loss.detach()) > float(metrics["proto_nce"])
    for pos, neg in seen:  # negatives: clusters of the same clustering that no sample of the batch is in
        assert not set(neg.tolist()) & set(pos.tolist())
    assert all(n < 3 for n in seen[0][1].tolist()) and all(n >= 3 for n in seen[1][1].tolist())
    fresh = _pcl()
    fresh.load_state_dict(pcl.state_dict())
    assert torch.equal(fresh.prototypes, pcl.prototypes)
