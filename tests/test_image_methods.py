"""The two-view image methods (SimCLR, BYOL, SimSiam, Barlow Twins, VICReg) beyond the contract of
tests/test_methods.py: the momentum schedule, the collapse monitor, the frames a video sample gives, the configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_methods import TINY
from vidssl.data.views import VideoInfo
from vidssl.methods import METHODS
from vidssl.paths import REPO_ROOT
from vidssl.train import load_run_config

TWO_VIEW = ["simclr", "byol", "simsiam", "barlow_twins", "vicreg", "swav", "dino", "moco_v3"]
def make(name: str, **extra: object) -> torch.nn.Module:
    """The method with its tiny config of ``tests/test_methods.py``."""
    cls = METHODS[name]
    return cls(cls.Config(**{**TINY[name], **extra}))  # type: ignore[return-value]


def test_byol_momentum_rises_from_its_base_to_one() -> None:
    torch.manual_seed(0)
    byol = make("byol", momentum=0.9, total_steps=10)
    with torch.no_grad():
        for p in byol.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in byol.target.parameters()]
    byol.after_step(0)  # tau = 0.9 at step 0
    for t, t0, o in zip(byol.target.parameters(), before, byol.online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * o)
    assert float(byol.tau) == pytest.approx(0.9)
    byol.after_step(5)  # half way: 1 - 0.1 (cos(pi / 2) + 1) / 2 = 0.95
    assert float(byol.tau) == pytest.approx(0.95)
    held = [p.clone() for p in byol.target.parameters()]
    byol.after_step(10)  # tau = 1: the target stays
    for t, t0 in zip(byol.target.parameters(), held, strict=True):
        assert torch.equal(t, t0)
    constant = make("byol", momentum=0.9, total_steps=None)  # outside a run: tau stays at its base
    constant.after_step(7)
    assert float(constant.tau) == pytest.approx(0.9)


@pytest.mark.parametrize("name", TWO_VIEW)
def test_two_view_methods_log_the_collapse_monitor_and_pair_video_frames(name: str) -> None:
    torch.manual_seed(0)
    method = make(name, input="images")
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    _, metrics = method({"video": video})
    monitor = "teacher_entropy" if name == "dino" else "embedding_std"  # DINO's collapse shows in its teacher
    assert 0.0 <= float(metrics[monitor]) <= 2.0
    pair = make(name, max_gap=3).sampler()(VideoInfo(40), np.random.default_rng(0))
    frames = np.asarray(pair)
    assert frames.shape == (2,) and 1 <= int(frames[1]) - int(frames[0]) <= 3


@pytest.mark.parametrize("name", TWO_VIEW)
@pytest.mark.parametrize("kind", ["cifar", "video"])
def test_each_method_has_a_cifar_and_a_video_config(name: str, kind: str) -> None:
    path = REPO_ROOT / "configs" / f"{name}_{kind}.yaml"
    cfg, model_cfg = load_run_config(path)
    assert cfg.method == name and model_cfg.input == ("images" if kind == "cifar" else "video")
    if kind == "cifar":
        size = model_cfg.global_size if name in ("swav", "dino") else model_cfg.crop_size
        assert model_cfg.backbone == "resnet18_cifar" and size == 32


def _epoch(method: torch.nn.Module, epoch: int) -> None:
    from vidssl.methods import EpochContext

    method.on_epoch_start(EpochContext(epoch, 0, 0, 0, torch.device("cpu"), torch.Generator(), lambda b: iter(())))


def test_swav_queue_starts_at_its_epoch_and_is_used_once_full() -> None:
    torch.manual_seed(0)
    swav = make("swav", input="images", queue_length=8, queue_start_epoch=1)
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    _epoch(swav, 0)
    _, m = swav({"video": video})
    assert m["queue_used"] == 0.0 and all(int(q.seen) == 0 for q in swav.queues)  # not before its epoch
    _epoch(swav, 1)
    _, m = swav({"video": video})
    assert m["queue_used"] == 0.0 and all(int(q.seen) == 4 for q in swav.queues)  # filling, not full yet
    swav({"video": video})
    _, m = swav({"video": video})  # 8 entries: full, so the codes see queue + batch
    assert m["queue_used"] == 1.0


def test_swav_prototypes_are_frozen_for_their_first_steps() -> None:
    torch.manual_seed(0)
    swav = make("swav", input="images", freeze_prototypes_steps=2)
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    for step, frozen in ((0, True), (1, True), (2, False)):
        swav.zero_grad(set_to_none=True)
        loss, _ = swav({"video": video})
        loss.backward()
        swav.before_step(step)
        assert (swav.prototypes.weight.grad is None) == frozen, step
        assert swav.net.backbone.conv1.weight.grad is not None


def test_dino_teacher_temperature_warms_up_by_epoch_and_the_centre_follows_the_teacher() -> None:
    from vidssl.methods.dino import teacher_temp_at

    cfg = METHODS["dino"].Config(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4)
    assert [round(teacher_temp_at(e, cfg), 6) for e in range(6)] == [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
    torch.manual_seed(0)
    dino = make("dino", input="images", center_momentum=0.9)
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    assert isinstance(dino.views.global_augment, torch.nn.ModuleList)  # two global crops, two augmentations
    captured: list[torch.Tensor] = []
    hook = dino.teacher.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    dino({"video": video})
    hook.remove()
    torch.testing.assert_close(dino.center, 0.1 * captured[0].mean(dim=0, keepdim=True))  # from 0: (1 - m) mean


def test_dino_last_layer_is_frozen_in_its_first_epochs() -> None:
    torch.manual_seed(0)
    dino = make("dino", input="images", freeze_last_layer_epochs=1)
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    for epoch, frozen in ((0, True), (1, False)):
        _epoch(dino, epoch)
        dino.zero_grad(set_to_none=True)
        loss, _ = dino({"video": video})
        loss.backward()
        dino.before_step(0)
        assert (dino.student.head.last.v.grad is None) == frozen, epoch
        assert dino.student.head.mlp[0].weight.grad is not None


def test_supcon_needs_labels_and_has_a_cifar_config() -> None:
    cls = METHODS["supcon"]
    method = cls(cls.Config(backbone="resnet18", projector=(32, 16)))
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    with pytest.raises(ValueError, match="needs class labels"):
        method({"video": video, "label": torch.full((4,), -1)})
    loss, _ = method({"video": video, "label": torch.tensor([0, 0, 1, 1])})
    assert torch.isfinite(loss)
    cfg, model_cfg = load_run_config(REPO_ROOT / "configs" / "supcon_cifar.yaml")
    assert cfg.method == "supcon" and model_cfg.input == "images" and cfg.data.kind == "images"


def test_npid_fixes_z_once_and_moves_the_bank_after_the_step() -> None:
    cls = METHODS["npid"]
    torch.manual_seed(0)
    npid = cls(cls.Config(backbone="resnet18", dim=8, bank_size=6, negatives=5, temperature=0.5))
    video = torch.randint(0, 256, (3, 3, 1, 40, 40), dtype=torch.uint8)
    batch = {"video": video, "index": torch.tensor([0, 2, 4])}
    assert float(npid.z) < 0
    before = npid.bank.bank.clone()
    npid(batch)
    z = float(npid.z)
    assert z > 0
    npid(batch)
    assert float(npid.z) == z  # estimated once, from the first batch
    assert torch.equal(npid.bank.bank, before)  # staged, not yet written
    npid.after_step(0)
    moved = (npid.bank.bank - before).abs().sum(dim=1) > 0
    assert moved.tolist() == [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="bank_size=6"):
        npid({"video": video, "index": torch.tensor([0, 1, 6])})
    with pytest.raises(ValueError, match="set model.bank_size=10"):
        npid.on_epoch_start(_ctx(10))


def _ctx(num_samples: int) -> object:
    from vidssl.methods import EpochContext

    return EpochContext(0, 0, 0, num_samples, torch.device("cpu"), torch.Generator(), lambda b: iter(()))


def test_jigsaw_tiles_are_windows_inside_their_cells() -> None:
    from vidssl.data.augment import jigsaw_tiles

    clip = torch.rand(2, 3, 2, 31, 31)  # cells of 10 px, the last px dropped
    tiles = jigsaw_tiles(clip, 3, 8, generator=torch.Generator().manual_seed(0))
    assert tiles.shape == (2, 9, 3, 2, 8, 8)
    offsets = torch.randint(0, 3, (2, 2, 9), generator=torch.Generator().manual_seed(0))
    for b in range(2):
        for n in range(9):
            i, j = divmod(n, 3)
            y, x = 10 * i + int(offsets[0, b, n]), 10 * j + int(offsets[1, b, n])
            assert torch.equal(tiles[b, n], clip[b, :, :, y:y + 8, x:x + 8])  # row-major, same for every frame
    with pytest.raises(ValueError, match="tile <= cell"):
        jigsaw_tiles(clip, 3, 11)


def test_pirl_terms_share_z_and_the_bank_holds_the_image_embedding() -> None:
    cls = METHODS["pirl"]
    torch.manual_seed(0)
    cfg = dict(backbone="resnet18", crop_size=32, dim=8, bank_size=6, negatives=5, jigsaw_size=30, tile_size=8)
    video = torch.randint(0, 256, (3, 3, 1, 40, 40), dtype=torch.uint8)
    batch = {"video": video, "index": torch.tensor([0, 2, 4])}
    for weight, silent in ((0.0, "jigsaw_head"), (1.0, "image_head")):  # each term alone trains its own head
        pirl = cls(cls.Config(**cfg, weight=weight))
        loss, _ = pirl(batch)
        loss.backward()
        head = getattr(pirl, silent)
        assert head.weight.grad is None or float(head.weight.grad.abs().sum()) == 0, silent
        other = pirl.image_head if silent == "jigsaw_head" else pirl.jigsaw_head
        assert float(other.weight.grad.abs().sum()) > 0
    pirl = cls(cls.Config(**cfg))
    torch.manual_seed(1)
    pirl(batch)
    z = float(pirl.nce.z)
    assert z > 0  # one constant for both terms, from the first batch
    pirl(batch)
    assert float(pirl.nce.z) == z
    before = pirl.bank.bank.clone()
    pirl.after_step(0)
    moved = (pirl.bank.bank - before).abs().sum(dim=1) > 0
    assert moved.tolist() == [True, False, True, False, True, False]
    # g reads the tiles in their shuffled order: another order, another embedding
    tiles = torch.randn(2, 9, 3, 8, 8)
    ident = torch.arange(9).repeat(2, 1)
    pirl.eval()
    assert not torch.allclose(pirl.embed_jigsaw(tiles, ident), pirl.embed_jigsaw(tiles, ident.flip(1)))
    torch.testing.assert_close(pirl.embed_jigsaw(tiles, ident.flip(1)), pirl.embed_jigsaw(tiles.flip(1), ident))
    with pytest.raises(ValueError, match="tile_size=20 exceeds"):
        cls.Config(jigsaw_size=30, tile_size=20)


def test_cmc_views_read_their_channels_and_cross_the_memories() -> None:
    from vidssl.models import ResNet

    cls = METHODS["cmc"]
    torch.manual_seed(0)
    cmc = cls(cls.Config(backbone="resnet18", crop_size=32, dim=8, bank_size=6, negatives=5))
    assert cmc.encoder_input == "lab" and cmc.l_encoder() is cmc.l_net and cmc.ab_encoder() is cmc.ab_net
    assert cmc.l_net.conv1.in_channels == 1 and cmc.ab_net.conv1.in_channels == 2
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, 1:] = torch.randn(2, 2, 32, 32)  # other ab, the same L
    cmc.eval()
    torch.testing.assert_close(cmc.l_net(x), cmc.l_net(y))  # the L trunk never sees ab
    assert not torch.allclose(cmc.ab_net(x), cmc.ab_net(y))
    rebuilt = ResNet.from_config(cmc.ab_net.config)  # the recorded config rebuilds a 2-plane trunk
    rebuilt.load_state_dict(cmc.ab_net.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), cmc.ab_net(x))
    # each view is scored against the other view's memory, and each memory moves towards its own view
    cmc.train()
    video = torch.randint(0, 256, (3, 3, 1, 40, 40), dtype=torch.uint8)
    batch = {"video": video, "index": torch.tensor([1, 3, 5])}
    before_l, before_ab = cmc.memory_l.bank.bank.clone(), cmc.memory_ab.bank.bank.clone()
    loss, _ = cmc(batch)
    assert float(cmc.memory_l.z) > 0 and float(cmc.memory_ab.z) > 0  # one Z per memory
    cmc.after_step(0)
    for bank, before in ((cmc.memory_l.bank.bank, before_l), (cmc.memory_ab.bank.bank, before_ab)):
        assert ((bank - before).abs().sum(dim=1) > 0).tolist() == [False, True, False, True, False, True]
    loss.backward()
    assert float(cmc.l_head.weight.grad.abs().sum()) > 0 and float(cmc.ab_head.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="ResNet channels"):
        ResNet(18, channels=(0, 3))


def test_cmc_exports_both_trunks_side_by_side(tmp_path: Path) -> None:
    from vidssl.eval.encoders import build_encoder
    from vidssl.models import Concat, ResNet, encoder_entries, load_record

    cls = METHODS["cmc"]
    torch.manual_seed(0)
    cmc = cls(cls.Config(backbone="resnet18", crop_size=32, dim=8, bank_size=6, negatives=5)).eval()
    both = cmc.encoder()
    assert isinstance(both, Concat) and both.num_features == 1024 and both.stride == 32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the paper's probe: the L features, then the ab features
        torch.testing.assert_close(both(x), torch.cat([cmc.l_net(x), cmc.ab_net(x)], dim=1))
        torch.testing.assert_close(both.forward_features(x)[:, 512:], cmc.ab_net.forward_features(x))
    path = tmp_path / "cmc.pt"
    torch.save({**encoder_entries(both, cmc.encoder_input), "config": {"method": "cmc", "model": {}}}, path)
    record = load_record(str(path))  # the record rebuilds the pair, each part reading its own channels
    assert isinstance(record.backbone, Concat) and record.input == "lab"
    assert record.backbone.config == both.config
    with torch.no_grad():
        torch.testing.assert_close(record.backbone.eval()(x), both(x))
    assert build_encoder(str(path)).stride == 32
    only_l = cls(cls.Config(backbone="resnet18", crop_size=32, dim=8, bank_size=6, negatives=5, encoder="l"))
    assert only_l.encoder() is only_l.l_net
    with pytest.raises(ValueError, match="strides differ"):
        Concat([cmc.l_net, ResNet(18, strides=(1, 2, 1, 1))])


@pytest.mark.parametrize("name", ["npid", "cmc", "pirl", "sela", "deepcluster"])
def test_index_readers_say_they_need_the_index_and_check_the_dataset(name: str) -> None:
    from tests.test_methods import _first_epoch

    method = make(name)
    _first_epoch(method)  # labels or banks for the 4 samples of TINY's first epoch
    video = torch.randint(0, 256, (2, 3, 1, 40, 40), dtype=torch.uint8)
    with pytest.raises(ValueError, match=rf"{name}: needs batch\['index'\]"):
        method({"video": video})
    if name in ("npid", "cmc", "pirl"):  # one memory entry per sample: a dataset of another size is named
        with pytest.raises(ValueError, match=rf"{name}: the dataset has 10 samples .* set model.bank_size=10"):
            method.on_epoch_start(_ctx(10))


def test_dino_trains_a_vision_transformer(tmp_path: Path) -> None:
    from tests.test_methods import _batch
    from vidssl.models import ViT, encoder_entries, load_record

    cls = METHODS["dino"]
    torch.manual_seed(0)
    method = cls(cls.Config(**{**TINY["dino"], "backbone": "vit_tiny_cifar"}))
    assert isinstance(method.encoder(), ViT) and isinstance(method.teacher.backbone, ViT)
    loss, _ = method(_batch(method))  # 32 px global and 16 px local crops: 8x8 and 4x4 patch grids
    loss.backward()
    assert torch.isfinite(loss) and method.encoder().conv_proj.weight.grad is not None
    assert method.encoder().encoder.pos_embedding.grad is not None  # the resized embedding is trained too
    path = tmp_path / "dino_vit.pt"
    torch.save(encoder_entries(method.encoder(), method.encoder_input), path)
    assert load_record(str(path)).backbone.config["arch"] == "vit"


def _image_ctx(video: torch.Tensor, step: int = 0, start: int = 0) -> Any:
    """An epoch context over ``video`` (N, 3, 1, H, W) served in batches of 4, indices in order."""
    from vidssl.methods import EpochContext

    n = video.shape[0]

    def batches(size: int) -> Any:
        for i in range(0, n, 4):
            yield {"video": video[i:i + 4], "index": torch.arange(i, min(n, i + 4))}

    return EpochContext(0, step, start, n, torch.device("cpu"), torch.Generator().manual_seed(0), batches)


def test_fill_banks_sets_each_bank_to_its_part_once_before_the_first_step() -> None:
    from vidssl.methods.base import BankNCE, fill_banks

    torch.manual_seed(0)
    video = torch.randint(0, 256, (10, 3, 1, 4, 4), dtype=torch.uint8)
    feats = video.float().flatten(1)[:, :7]  # a deterministic "network": 3 + 4 dimensions per sample

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["video"].float().flatten(1)[:, :7]

    a, b = BankNCE(10, 3, 2, 0.1, init="features"), BankNCE(10, 4, 2, 0.1, init="features")
    assert fill_banks(_image_ctx(video), embed, a, b)
    torch.testing.assert_close(a.bank.bank, F.normalize(feats[:, :3], dim=1))  # each bank its own slice
    torch.testing.assert_close(b.bank.bank, F.normalize(feats[:, 3:], dim=1))
    for ctx in (_image_ctx(video, step=5), _image_ctx(video, start=1)):  # a resumed run keeps its bank
        untouched = BankNCE(10, 7, 2, 0.1, init="features")
        before = untouched.bank.bank.clone()
        assert not fill_banks(ctx, embed, untouched)
        assert torch.equal(untouched.bank.bank, before)
    authors = BankNCE(10, 3, 2, 0.1)  # init "random": the authors' random vectors stay
    before = authors.bank.bank.clone()
    assert not fill_banks(_image_ctx(video), embed, authors)
    assert torch.equal(authors.bank.bank, before)
    mixed_random, mixed_filled = BankNCE(10, 3, 2, 0.1), BankNCE(10, 4, 2, 0.1, init="features")
    before = mixed_random.bank.bank.clone()
    assert fill_banks(_image_ctx(video), embed, mixed_random, mixed_filled)
    assert torch.equal(mixed_random.bank.bank, before)
    torch.testing.assert_close(mixed_filled.bank.bank, F.normalize(feats[:, 3:], dim=1))
    with pytest.raises(ValueError, match=r"expected the banks' dimensions side by side \(\[3\]\)"):
        fill_banks(_image_ctx(video), embed, BankNCE(10, 3, 2, 0.1, init="features"))
    with pytest.raises(ValueError, match="init must be 'random' or 'features'"):
        BankNCE(10, 3, 2, 0.1, init="zeros")


@pytest.mark.parametrize("name", ["npid", "pirl", "cmc"])
def test_bank_init_features_fills_every_bank_with_the_initial_embeddings(name: str) -> None:
    cls = METHODS[name]
    extra = {"pirl": {"jigsaw_size": 30, "tile_size": 8}}.get(name, {})
    torch.manual_seed(0)
    method = cls(cls.Config(backbone="resnet18", crop_size=32, dim=8, bank_size=6, negatives=5,
                            bank_init="features", **extra))
    video = torch.randint(0, 256, (6, 3, 1, 40, 40), dtype=torch.uint8)
    banks = {"npid": ["nce"], "pirl": ["nce"], "cmc": ["memory_l", "memory_ab"]}[name]
    method.eval()  # BatchNorm's running statistics: each sample's embedding independent of its batch
    torch.manual_seed(1)
    method.on_epoch_start(_image_ctx(video))
    torch.manual_seed(1)  # the same augmentation draws, batch by batch as the pass made them

    def embed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if name == "cmc":
            return torch.cat(method.embed(batch), dim=1)
        if name == "pirl":
            return method.embed_image(batch["video"].float() / 255)
        return method.embed(batch)

    with torch.no_grad():
        expected = torch.cat([embed({"video": video[i:i + 4], "index": torch.arange(i, min(6, i + 4))})
                              for i in (0, 4)])
    for b, part in zip(banks, expected.split(8, dim=1), strict=True):
        torch.testing.assert_close(getattr(method, b).bank.bank, part)
    with pytest.raises(ValueError, match="init must be 'random' or 'features', got 'zeros'"):
        cls(cls.Config(backbone="resnet18", bank_init="zeros", **extra))
