from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from vidssl.models import (
    BACKBONES,
    ClipEncoder,
    backbone_from_config,
    build_backbone,
    load_backbone_weights,
    torchvision_state_dict,
)

EXPECTED = {  # name -> (stride, num_features)
    "resnet18": (32, 512),
    "resnet50": (32, 2048),
    "resnet18_s8": (8, 512),
    "resnet18_s8_l3": (8, 256),
    "resnet18_s8_reflect": (8, 512),
    "resnet18_s8_l3_reflect": (8, 256),
    "resnet50_s8": (8, 2048),
    "resnet18_mast": (4, 512),
    "resnet18_cifar": (8, 512),
    "resnet50_cifar": (8, 2048),
    "resnet18_ln": (32, 512),
    "resnet18_cifar_ln": (8, 512),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_contract_shapes(name: str) -> None:
    net = build_backbone(name).eval()
    assert (net.stride, net.num_features) == EXPECTED[name]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = net.forward_features(x)
        pooled = net(x)
    assert feats.shape == (2, net.num_features, 64 // net.stride, 96 // net.stride)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))


def test_stride_change_keeps_torchvision_names_and_values() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    net = build_backbone("resnet18_s8")
    net.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    # With the original strides restored the trunk equals torchvision's own forward pass.
    plain = build_backbone("resnet18")
    plain.load_state_dict(net.state_dict())
    body = torch.nn.Sequential(*list(tv.children())[:-2]).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval().forward_features(x), body(x))


@pytest.mark.parametrize("name", ["resnet18_s8", "resnet18_s8_l3", "resnet50_s8"])
def test_torchvision_state_dict_loads_strict(name: str, tmp_path: Path) -> None:
    net = build_backbone(name)
    state = torchvision_state_dict(net)
    tv = getattr(torchvision.models, f"resnet{net.depth}")()
    tv.load_state_dict(state, strict=True)
    for key, value in net.state_dict().items():
        assert torch.equal(tv.state_dict()[key], value)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    again = load_backbone_weights(build_backbone(name), path)
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(build_backbone("resnet18"), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: cannot read weights"):
        load_backbone_weights(build_backbone("resnet18"), bad)
    small = tmp_path / "l3.pth"
    torch.save(build_backbone("resnet18_s8_l3").state_dict(), small)
    with pytest.raises(ValueError, match="missing .* backbone parameters"):
        load_backbone_weights(build_backbone("resnet18"), small)


def test_clip_encoder_folds_time() -> None:
    net = build_backbone("resnet18_s8_l3").eval()
    enc = ClipEncoder(net)
    clip = torch.randn(2, 3, 3, 32, 48)
    with torch.no_grad():
        out = enc.forward_features(clip)
        frame = net.forward_features(clip[:, :, 1])
    assert out.shape == (2, 256, 3, 4, 6)
    torch.testing.assert_close(out[:, :, 1], frame)
    assert enc(clip).shape == (2, 3, 256)


def test_config_round_trip() -> None:
    net = build_backbone("resnet18_mast")
    again = backbone_from_config(net.config)
    assert again.config == net.config and again.stride == 4


def test_reflect_padding_matches_a_reflect_padded_reference(tmp_path: Path) -> None:
    """Every padded convolution pads by reflection: the stem equals F.pad(reflect) + an unpadded convolution;
    the whole trunk differs from the zero-padded one only near the border; the padding survives a checkpoint,
    truncation and an old checkpoint without the key loads zero-padded."""
    import torch.nn.functional as F

    from vidssl.models import load_encoder
    from vidssl.models.resnet import truncate

    torch.manual_seed(0)
    net = build_backbone("resnet18_s8_reflect").eval()
    zero = build_backbone("resnet18_s8")
    zero.load_state_dict(net.state_dict())  # same parameters, different padding
    zero.eval()
    x = torch.randn(1, 3, 64, 96)
    w = net.conv1.weight
    torch.testing.assert_close(net.conv1(x), F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), w, stride=2))
    with torch.no_grad():
        a, b = net.forward_features(x), zero.forward_features(x)
    assert a.shape == b.shape == (1, 512, 8, 12)
    assert not torch.allclose(a, b, atol=1e-4)
    padded = sum(isinstance(m, torch.nn.Conv2d) and m.padding_mode == "reflect" for m in net.modules())
    assert padded == sum(isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0) for m in net.modules()) == 17
    assert net.config["padding"] == "reflect" and truncate(net, 3).config["padding"] == "reflect"
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"encoder": net.state_dict(), "backbone": net.config}, ckpt)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(ckpt).eval().forward_features(x), a)
    old = {k: v for k, v in zero.config.items() if k != "padding"}
    assert backbone_from_config(old).config["padding"] == "zeros"
    with pytest.raises(ValueError, match="padding must be one of zeros, reflect, got 'circular'"):
        backbone_from_config({**old, "padding": "circular"})


def test_load_encoder_rebuilds_checkpoint_architecture(tmp_path: Path) -> None:
    from vidssl.models import load_encoder

    net = build_backbone("resnet18_s8_l3")
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"encoder": net.state_dict(), "backbone": net.config, "step": 3}, ckpt)
    again = load_encoder(ckpt, backbone="resnet50")  # the checkpoint's own recipe wins
    assert again.config == net.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), net.state_dict().values(), strict=True))
    plain = tmp_path / "tv.pth"
    torch.save(torchvision_state_dict(net), plain)
    with pytest.raises(ValueError, match="no backbone name given"):
        load_encoder(plain)
    assert load_encoder(plain, "resnet18_s8_l3").num_features == 256


def test_truncate_drops_layer4_and_keeps_the_first_stages() -> None:
    from vidssl.models.resnet import truncate

    torch.manual_seed(0)
    net = build_backbone("resnet18_s8").eval()
    short = truncate(net, 3)
    assert short.num_features == 256 and short.stride == 8 and short.layer4 is None and not short.training
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        mid = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        assert torch.equal(short.forward_features(x), mid)
    assert truncate(short, 3) is short
    two = truncate(net, 2)  # block 2 (RotNet's evaluation): the first two stages, stride 8 here
    assert two.num_features == 128 and two.layer3 is None and two.stride == 8
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        assert torch.equal(two.forward_features(x), net.layer2(net.layer1(stem)))
    with pytest.raises(ValueError, match="has 3 residual stages, so it cannot keep 4"):
        truncate(short, 4)


def test_restride_runs_the_same_weights_on_a_finer_grid() -> None:
    """A stride-32 trunk at stride 8: layer3 and layer4 at stride 1, the same parameters; its layer3 output
    equals a convolution-by-convolution recomputation with those strides (torch's own conv2d)."""
    from vidssl.models.resnet import restride, truncate

    torch.manual_seed(0)
    net = build_backbone("resnet18").eval()
    fine = restride(net, 8)
    assert fine.stride == 8 and fine.config["strides"] == (1, 2, 1, 1) and not fine.training
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fine.state_dict().values(), strict=True))
    x = torch.randn(1, 3, 64, 80)
    assert fine.forward_features(x).shape == (1, 512, 8, 10)
    with torch.no_grad():  # layer3 by hand at stride 1: conv1 of its first block and the 1x1 shortcut unstrided
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer2(net.layer1(stem))
        block = net.layer3[0]
        out = F.relu(block.bn1(F.conv2d(h, block.conv1.weight, stride=1, padding=1)))
        out = block.bn2(block.conv2(out)) + block.downsample[1](F.conv2d(h, block.downsample[0].weight, stride=1))
        want = net.layer3[1](F.relu(out))
        torch.testing.assert_close(truncate(fine, 3).forward_features(x), want)
    assert restride(net, 32) is net
    assert restride(net, 16).config["strides"] == (1, 2, 2, 1)
    assert restride(build_backbone("resnet18_cifar"), 8).stride == 8  # already there
    with pytest.raises(ValueError, match="cannot run at stride 2: setting its stages to stride 1 gives 32, 16, 8, 4"):
        restride(net, 2)
    from vidssl.eval.encoders import build_encoder

    encoder = build_encoder("random", backbone="resnet18", layers=3, stride=8)  # `--layers 3 --stride 8`
    assert encoder.stride == 8 and encoder.encode is not None
    assert encoder.encode(np.zeros((48, 64, 3), np.uint8)).shape == (256, 6, 8)
    with pytest.raises(ValueError, match="--stride: random: a trunk of output stride 32"):
        build_encoder("random", backbone="resnet18", stride=3)


def test_build_encoder_layers_option(tmp_path: Path) -> None:
    import numpy as np

    from vidssl.eval.encoders import build_encoder

    net = build_backbone("resnet18_s8")
    path = tmp_path / "crw.pt"
    torch.save({"encoder": net.state_dict(), "backbone": net.config}, path)
    frame = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    full, short = build_encoder(str(path)), build_encoder(str(path), layers=3)
    assert full.encode is not None and short.encode is not None
    assert full.encode(frame).shape == (512, 5, 6) and short.encode(frame).shape == (256, 5, 6)
    random_short = build_encoder("random", backbone="resnet18_s8", layers=3)
    assert random_short.encode is not None and random_short.encode(frame).shape[0] == 256


def test_video_backbones_keep_the_clip_contract_and_the_record(tmp_path: Path) -> None:
    from vidssl.models import VideoBackbone, build_video_backbone, encoder_entries, load_encoder
    from vidssl.models.video import VideoResNet

    torch.manual_seed(0)
    net = build_video_backbone("r3d_18").eval()
    assert isinstance(net, VideoBackbone) and isinstance(net, VideoResNet)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        feats = net.forward_features(clip)
    assert feats.shape == (1, 512, 1, 2, 2)  # temporal stride 8, spatial stride 16
    torch.testing.assert_close(net(clip), feats.mean(dim=(2, 3, 4)))
    path = tmp_path / "video.pt"
    torch.save(encoder_entries(net, "rgb"), path)
    again = load_encoder(path).eval()  # the record rebuilds the clip trunk from its arch key
    assert isinstance(again, VideoResNet) and again.config == {"arch": "video_resnet", "name": "r3d_18"}
    with torch.no_grad():
        torch.testing.assert_close(again.forward_features(clip), feats)
    torchvision.models.video.r3d_18().load_state_dict({**torchvision.models.video.r3d_18().state_dict(),
                                                       **net.state_dict()}, strict=True)  # torchvision's names
    from vidssl.eval.encoders import build_encoder

    with pytest.raises(ValueError, match="not an image trunk"):
        build_encoder(str(path))  # label propagation encodes frames
    with pytest.raises(ValueError, match="clip trunk"):
        build_backbone("r3d_18")


def test_the_record_reads_what_the_loop_writes(tmp_path: Path) -> None:
    from vidssl.models import encoder_entries, load_record

    net = build_backbone("resnet18_mast")
    path = tmp_path / "mast.pt"
    torch.save({**encoder_entries(net, "lab"), "config": {"method": "mast", "model": {}}}, path)
    record = load_record(str(path), layers=3)
    assert record.input == "lab" and record.method == "mast" and record.name == "mast"
    assert record.backbone.num_features == 256 and record.backbone.stride == 4  # layer4 dropped
    assert load_record(str(path), input="rgb").input == "rgb"
    assert load_record("random", backbone="resnet18_cifar", seed=2).name == "random-resnet18_cifar"
    with pytest.raises(ValueError, match="hsv"):
        encoder_entries(net, "hsv")  # type: ignore[arg-type]


# ---- Vision Transformers ---------------------------------------------------------------------------------------


def _small_vit() -> torch.nn.Module:
    from vidssl.models import ViT

    torch.manual_seed(0)
    return ViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()


def test_vit_equals_torchvision_at_its_size_and_keeps_the_contract() -> None:
    from vidssl.models import Backbone

    net = _small_vit()
    assert isinstance(net, Backbone) and (net.stride, net.num_features) == (8, 16)
    reference = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                     hidden_dim=16, mlp_dim=32)
    reference.heads = torch.nn.Identity()  # the class token after the final norm, as torchvision computes it
    reference.load_state_dict(net.state_dict(), strict=True)  # torchvision's names, nothing missing or extra
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference.eval()(x), rtol=0, atol=0)
        assert net.forward_features(x).shape == (2, 16, 4, 4)
        # other sizes: a ceil(H / 8) x ceil(W / 8) grid; a side that is not a multiple is zero-padded
        odd = torch.randn(1, 3, 36, 50)
        feats = net.forward_features(odd)
        assert feats.shape == (1, 16, 5, 7)
        torch.testing.assert_close(feats, net.forward_features(torch.nn.functional.pad(odd, (0, 6, 0, 4))))


def test_vit_position_embedding_is_resized_per_grid() -> None:
    net = _small_vit()
    pos = net.encoder.pos_embedding
    assert net.position_embedding(4, 4) is pos  # the trained grid: the parameter itself
    with torch.no_grad():
        pos.copy_(torch.arange(16.0).repeat(1, 17, 1))  # every position the same vector
        wide = net.position_embedding(6, 9)
    assert wide.shape == (1, 1 + 54, 16)
    torch.testing.assert_close(wide, torch.arange(16.0).expand(1, 55, 16))  # a constant field stays constant


def test_vit_record_round_trip(tmp_path: Path) -> None:
    from vidssl.models import VIT_BACKBONES, ViT, encoder_entries, load_record, random_backbone

    net = _small_vit()
    path = tmp_path / "vit.pt"
    torch.save(encoder_entries(net, "rgb"), path)
    record = load_record(str(path))
    assert isinstance(record.backbone, ViT) and record.backbone.config == net.config
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(record.backbone.eval().forward_features(x), net.forward_features(x))
    with pytest.raises(ValueError, match="only a ResNet trunk can drop stages"):
        load_record(str(path), layers=3)
    from vidssl.eval.encoders import build_encoder

    frames = build_encoder(str(path))  # label propagation reads the patch tokens on their grid
    assert frames.stride == 8 and frames.encode is not None
    assert frames.encode(np.zeros((30, 41, 3), dtype=np.uint8)).shape == (16, 4, 6)
    assert sorted(VIT_BACKBONES) == ["vit_small_16", "vit_small_8", "vit_tiny_cifar"]
    a, b = random_backbone("vit_tiny_cifar", 3), random_backbone("vit_tiny_cifar", 3)
    assert (a.stride, a.num_features) == (4, 192)
    torch.testing.assert_close(a.state_dict()["encoder.pos_embedding"], b.state_dict()["encoder.pos_embedding"])
    with pytest.raises(ValueError, match="reads a ResNet's stages"):
        build_backbone("vit_small_16")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViT(image_size=30, patch_size=8)
