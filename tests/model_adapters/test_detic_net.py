"""Parity of the detectron2-free Detic port with outputs of the original code (tests/fixtures/detic, README there).

The tiny Detic (Swin-B architecture, reduced widths) is loaded from the fixture's state dict through the real
checkpoint mapping; every stage is compared with what Detic/detectron2 recorded on the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from model_adapters.detic_net.centernet import ProposalSettings, decode_proposals
from model_adapters.detic_net.checkpoint import (
    DeticCheckpointError,
    arch_from_state_dict,
    build_from_state_dict,
    check_keys,
    count_indices,
    expected_keys,
    load_detic,
    map_state_dict,
)
from model_adapters.detic_net.model import DeticNet
from model_adapters.detic_net.preprocess import batch_images, resize_image
from model_adapters.detic_net.resnet import TimmResNet
from model_adapters.detic_net.roi_heads import DetectionSettings, classifier_weight
from model_adapters.detic_net.rpn import RPNSettings, rpn_proposals
from model_adapters.detic_net.vlpart import VLPartArch, VLPartNet

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "detic"
IMAGES = {"img1": "input_img1_grace_hopper.png", "img2": "input_img2_crop300x500.png"}
# The fixture README's suggested port tolerances (float32, CPU).
FEAT_ATOL, FEAT_RTOL, BOX_ATOL, SCORE_ATOL = 1e-4, 1e-3, 1e-2, 1e-5


@pytest.fixture(scope="module")
def net() -> DeticNet:
    return load_detic(FIX / "tiny_detic_swinb.pth")


@pytest.fixture(scope="module")
def zs_weight() -> torch.Tensor:
    return classifier_weight(torch.from_numpy(np.load(FIX / "tiny_detic_text_emb.npy")))


def ref(img: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(FIX / f"ref_tiny_detic_swinb_{img}.npz").items()}


def image(img: str) -> np.ndarray:
    return np.asarray(Image.open(FIX / IMAGES[img]).convert("RGB"))


def close(a: torch.Tensor, b: torch.Tensor, atol: float = FEAT_ATOL, rtol: float = FEAT_RTOL) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_classifier_weight_equals_the_checkpoints_zs_weight(zs_weight: torch.Tensor) -> None:
    sd = torch.load(FIX / "tiny_detic_swinb.pth", weights_only=True)
    for k in range(3):
        close(zs_weight, sd[f"roi_heads.box_predictor.{k}.cls_score.zs_weight"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("img", IMAGES)
def test_preprocessing_is_bit_identical(net: DeticNet, img: str) -> None:
    r = ref(img)
    batch, sizes = batch_images([resize_image(image(img), 320, 512)], net.size_divisibility)
    assert sizes == [tuple(r["image_size_resized"].tolist())]
    assert torch.equal(batch, r["image_tensor"])


@pytest.mark.parametrize("img", IMAGES)
def test_backbone_and_fpn(net: DeticNet, img: str) -> None:
    r = ref(img)
    with torch.no_grad():
        bottom_up = net.backbone.bottom_up(r["image_tensor"])
        fpn = net.backbone(r["image_tensor"])
    for name in ("swin1", "swin2", "swin3"):
        close(bottom_up[name], r[f"backbone/{name}"])
    for level in range(3, 8):
        close(fpn[f"p{level}"], r[f"fpn/p{level}"])


@pytest.mark.parametrize("img", IMAGES)
def test_centernet_head_and_proposals(net: DeticNet, img: str) -> None:
    r = ref(img)
    with torch.no_grad():
        heatmaps, regs = net.centernet_head([r[f"fpn/p{lv}"] for lv in range(3, 8)])
    for lv in range(5):
        close(heatmaps[lv], r[f"centernet/agn_hm_logits_l{lv}"])
        close(regs[lv], r[f"centernet/reg_pred_l{lv}"])
    stored_hm = [r[f"centernet/agn_hm_logits_l{lv}"] for lv in range(5)]
    stored_reg = [r[f"centernet/reg_pred_l{lv}"] for lv in range(5)]
    ((boxes, scores),) = decode_proposals(stored_hm, stored_reg, net.proposal_strides, ProposalSettings())
    assert len(boxes) == 256  # ties at the kthvalue cut would keep more
    close(boxes, r["proposals/boxes"], atol=BOX_ATOL, rtol=0)
    close(scores, r["proposals/objectness_logits"], atol=SCORE_ATOL, rtol=0)


@pytest.mark.parametrize("img", IMAGES)
def test_cascade_stages_from_stored_proposals(net: DeticNet, zs_weight: torch.Tensor, img: str) -> None:
    r = ref(img)
    feats = [r["fpn/p3"], r["fpn/p4"], r["fpn/p5"]]
    size = tuple(r["image_size_resized"].tolist())
    with torch.no_grad():
        stages = net.roi_heads.run_stages(feats, [r["proposals/boxes"]], [size], zs_weight)
    close(stages[0][0].features, r["stage0/box_head_feat"])
    for k, (out,) in enumerate(stages):
        close(out.in_boxes, r[f"stage{k}/in_boxes"], atol=BOX_ATOL, rtol=0)
        close(out.logits, r[f"stage{k}/cls_logits"])
        close(out.deltas, r[f"stage{k}/deltas"])
        close(out.pred_boxes, r[f"stage{k}/pred_boxes"], atol=BOX_ATOL, rtol=0)


@pytest.mark.parametrize("img", IMAGES)
@pytest.mark.parametrize("mode", ["allcls", "oneclass"])
def test_end_to_end_detections_and_masks(net: DeticNet, zs_weight: torch.Tensor, img: str, mode: str) -> None:
    r, pixels = ref(img), image(img)
    batch, sizes = batch_images([resize_image(pixels, 320, 512)], net.size_divisibility)
    settings = DetectionSettings(score_thresh=1e-4, nms_thresh=0.5, max_detections=100,
                                 one_class_per_proposal=mode == "oneclass")  # fmt: skip
    with torch.no_grad():
        (det,) = net(batch, sizes, [pixels.shape[:2]], zs_weight, settings=settings)
    assert torch.equal(det.extras["proposal_index"], r[f"{mode}/nms_out/kept_proposal_index"])
    assert torch.equal(det.classes, r[f"{mode}/pred_classes"])
    close(det.extras["resized_boxes"], r[f"{mode}/nms_out/boxes"], atol=BOX_ATOL, rtol=0)
    close(det.boxes, r[f"{mode}/pred_boxes"], atol=BOX_ATOL, rtol=0)
    close(det.scores, r[f"{mode}/scores"], atol=SCORE_ATOL, rtol=0)
    if mode == "allcls":
        close(det.extras["mask_logits"], r["allcls/mask/logits"])
    shape = r[f"{mode}/pred_masks_shape"].tolist()
    expected = np.unpackbits(r[f"{mode}/pred_masks_packbits"].numpy(), axis=-1, count=shape[2]).astype(bool)
    assert list(det.masks.shape) == shape
    agreement = (det.masks.numpy() == expected).reshape(len(expected), -1).mean(axis=1)
    assert agreement.min() >= 0.9999


def manifest(name: str) -> dict[str, torch.Tensor]:
    keys = json.loads((FIX / f"manifest_{name}.json").read_text())["keys"]
    return {k["name"]: torch.empty(k["shape"], device="meta") for k in keys}


# Keys dropped per manifest, counted from the fixture README: 3 zs_weight; Swin-B 24 relative_position_index;
# R50 53 num_batches_tracked + the 2 in21k fc keys; CoDet 149 text_encoder + 24 concept heads + 3 detection_weight.
DROPPED = {"detic_swinb": 3 + 24, "detic_r50": 3 + 53 + 2, "codet_swinb": 3 + 24 + 149 + 24 + 3}


@pytest.mark.parametrize("name", DROPPED)
def test_every_manifest_key_is_mapped(name: str) -> None:
    raw = manifest(name)
    state = map_state_dict({"model": raw}, name)
    assert len(raw) - len(state) == DROPPED[name]
    arch = arch_from_state_dict(state, name)
    with torch.device("meta"):
        net = DeticNet(arch)
    check_keys(expected_keys(net), state, name)  # raises on any missing, unexpected or mis-shaped key
    assert (arch.fpn_channels, arch.fc_dim, arch.zs_dim) == (256, 1024, 512)
    if arch.backbone == "swin":
        assert (arch.swin_embed_dim, arch.swin_depths, arch.swin_heads, arch.swin_window) == (
            128, (2, 2, 18, 2), (4, 8, 16, 32), 7)  # fmt: skip
    else:
        assert arch.resnet_layers == (3, 4, 6, 3)


def test_checkpoint_errors_name_the_keys() -> None:
    sd = torch.load(FIX / "tiny_detic_swinb.pth", weights_only=True)
    broken = dict(sd)
    del broken["roi_heads.box_head.1.fc2.bias"]
    broken["roi_heads.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(DeticCheckpointError) as info:
        build_from_state_dict(broken, "broken.pth")
    message = str(info.value)
    assert "missing keys: roi_heads.box_head.1.fc2.bias" in message
    assert "unexpected keys: roi_heads.extra_head.weight" in message
    with pytest.raises(DeticCheckpointError, match="not a Detic/CoDet/VLPart checkpoint: missing key"):
        build_from_state_dict({"model": {"backbone.foo": torch.zeros(1)}}, "other.pth")


def test_resnet_frozen_bn_backbone_matches_timm_under_detectron2() -> None:
    """The R50 trunk (timm layout, FrozenBN) against VLPart's tiny timm ResNet-50 run by the original code.

    Same input tensor as the Detic fixture (the README states they are bit-identical); stride-4..32 maps are
    stored as their top-left 24x24 crop plus full-map statistics.
    """
    sd = torch.load(FIX / "tiny_vlpart_r50.pth", weights_only=True)
    state = {k.removeprefix("backbone.bottom_up."): v for k, v in map_state_dict(sd).items() if "bottom_up" in k}
    trunk = TimmResNet(
        tuple(count_indices(sd, r"backbone\.bottom_up\.base\.layer(\d+)\.(\d+)\.conv1\.weight")),
        stem=state["base.conv1.weight"].shape[0],
        base_planes=state["base.layer1.0.conv1.weight"].shape[0],
    )
    trunk.load_state_dict(state, strict=True)
    r = {k: torch.from_numpy(v) for k, v in np.load(FIX / "ref_tiny_vlpart_r50_img1.npz").items()}
    with torch.no_grad():
        out = trunk(ref("img1")["image_tensor"])
    for name in ("layer2", "layer3", "layer4", "layer5"):
        crop = r[f"backbone/{name}_crop24"]
        assert list(out[name].shape) == r[f"backbone/{name}_shape"].tolist()
        close(out[name][..., : crop.shape[2], : crop.shape[3]], crop, atol=1e-3, rtol=1e-4)
        stats = r[f"backbone/{name}_stats"]  # sum, sum|x|, mean, std, min, max over the whole map
        full = out[name].double()
        mine = torch.stack([full.sum(), full.abs().sum(), full.mean(), full.std(), full.min(), full.max()])
        torch.testing.assert_close(mine, stats, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- VLPart R50


@pytest.fixture(scope="module")
def vlpart() -> VLPartNet:
    net = load_detic(FIX / "tiny_vlpart_r50.pth")
    assert isinstance(net, VLPartNet)
    return net


def vlpart_ref() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(FIX / "ref_tiny_vlpart_r50_img1.npz").items()}


def stats(x: torch.Tensor) -> torch.Tensor:
    """The fixture's full-map statistics: sum, sum|x|, mean, std, min, max."""
    x = x.double()
    return torch.stack([x.sum(), x.abs().sum(), x.mean(), x.std(), x.min(), x.max()])


def test_vlpart_fpn_rpn_and_proposals(vlpart: VLPartNet) -> None:
    r, pixels = vlpart_ref(), image("img1")
    batch, sizes = batch_images([resize_image(pixels, 320, 512)], vlpart.size_divisibility)
    assert torch.equal(batch, ref("img1")["image_tensor"])  # VLPart's input is Detic's, bit for bit
    with torch.no_grad():
        feats = vlpart.backbone(batch)
        logits, deltas = vlpart.rpn_head([feats[f"p{lv}"] for lv in range(2, 7)])
        ((boxes, objectness),) = rpn_proposals(logits, deltas, vlpart.rpn_strides, sizes, RPNSettings())
    # Activations reach ~1e2 here: compare at the fixture's relative tolerance.
    for level in range(3, 7):
        close(feats[f"p{level}"], r[f"fpn/p{level}"], atol=5e-4)
    crop = r["fpn/p2_crop24"]
    close(feats["p2"][..., :24, :24], crop, atol=5e-4)
    torch.testing.assert_close(stats(feats["p2"]), r["fpn/p2_stats"], rtol=1e-5, atol=1e-3)
    for level in range(1, 5):
        close(logits[level], r[f"rpn/objectness_logits_l{level}"])
        close(deltas[level], r[f"rpn/anchor_deltas_l{level}"])
    close(logits[0][..., :24, :24], r["rpn/objectness_logits_l0_crop24"])
    # The same 1000 proposals; neighbours whose logits differ by < 1e-5 may swap places.
    assert len(boxes) == len(r["proposals/boxes"]) == 1000
    iou, match = box_iou(boxes, r["proposals/boxes"]).max(dim=1)
    assert iou.min() > 0.9999 and len(set(match.tolist())) == 1000
    close(objectness, r["proposals/objectness_logits"][match], atol=SCORE_ATOL, rtol=0)


def test_vlpart_box_stage_detections_and_masks(vlpart: VLPartNet) -> None:
    r, pixels = vlpart_ref(), image("img1")
    zs = classifier_weight(torch.from_numpy(np.load(FIX / "tiny_vlpart_text_emb.npy")))
    sd = torch.load(FIX / "tiny_vlpart_r50.pth", weights_only=True)
    close(zs, sd["roi_heads.box_predictor.cls_score.zs_weight"], atol=1e-6, rtol=0)
    with torch.no_grad():
        batch, sizes = batch_images([resize_image(pixels, 320, 512)], vlpart.size_divisibility)
        feats = vlpart.backbone(batch)
        roi_feats = [feats[f"p{lv}"] for lv in range(2, 6)]
        proposals = [(r["proposals/boxes"], r["proposals/objectness_logits"])]
        (stage,) = vlpart.run_box_head(roi_feats, proposals, zs)
        settings = DetectionSettings(
            score_thresh=1e-4, nms_thresh=0.5, max_detections=100, one_class_per_proposal=False
        )
        (det,) = vlpart(batch, sizes, [pixels.shape[:2]], zs, settings=settings)
    close(stage.logits, r["stage0/cls_logits"], atol=5e-4)
    close(stage.deltas, r["stage0/deltas"], atol=5e-4)
    close(stage.pred_boxes, r["stage0/pred_boxes"], atol=BOX_ATOL, rtol=0)
    assert torch.equal(det.classes, r["default/pred_classes"])
    close(det.boxes, r["default/pred_boxes"], atol=BOX_ATOL, rtol=0)
    close(det.scores, r["default/scores"], atol=SCORE_ATOL, rtol=0)
    close(det.extras["mask_logits"], r["default/mask/logits"], atol=5e-4)
    shape = r["default/pred_masks_shape"].tolist()
    expected = np.unpackbits(r["default/pred_masks_packbits"].numpy(), axis=-1, count=shape[2]).astype(bool)
    agreement = (det.masks.numpy() == expected).reshape(len(expected), -1).mean(axis=1)
    assert agreement.min() >= 0.9999


def test_vlpart_r50_manifest_is_mapped() -> None:
    raw = manifest("vlpart_r50_lvis")
    state = map_state_dict({"model": raw})
    assert len(raw) - len(state) == 53 + 2  # num_batches_tracked, freq_weight and zs_weight
    arch = arch_from_state_dict(state)
    assert isinstance(arch, VLPartArch) and (arch.fpn_channels, arch.fc_dim, arch.zs_dim) == (256, 1024, 1024)
    with torch.device("meta"):
        net = VLPartNet(arch)
    check_keys(expected_keys(net), state, "vlpart_r50_lvis")


def test_vlpart_swinb_cascade_manifest_is_mapped() -> None:
    raw = manifest("vlpart_swinb_lvis")
    state = map_state_dict({"model": raw})
    # Dropped, counted from the manifest's description in the fixture README: per cascade stage zs_weight and
    # freq_weight (3 + 3), and the 24 Swin relative_position_index buffers (depths 2 + 2 + 18 + 2).
    assert len(raw) - len(state) == 3 + 3 + 24
    arch = arch_from_state_dict(state)
    assert isinstance(arch, VLPartArch) and arch.backbone == "swin"
    assert (arch.fpn_channels, arch.fc_dim, arch.zs_dim) == (256, 1024, 1024)
    assert (arch.swin_embed_dim, arch.swin_depths, arch.swin_heads, arch.swin_window) == (
        128, (2, 2, 18, 2), (4, 8, 16, 32), 7)  # fmt: skip
    with torch.device("meta"):
        net = VLPartNet(arch)
    assert net.cascade and list(net.backbone.bottom_up.strides.values()) == [4, 8, 16, 32]
    check_keys(expected_keys(net), state, "vlpart_swinb_lvis")  # raises on any missing, unexpected or mis-shaped key
