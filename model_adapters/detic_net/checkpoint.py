"""Official Detic / CoDet (and VLPart R50 / Swin-B) checkpoints -> ``DeticNet`` (``VLPartNet``): keys mapped by rule.

Sizes are read off the weights. detectron2 files hold ``{"model": state_dict, ...}``. Renames:
``proposal_generator.centernet_head.`` -> ``centernet_head.``, ``proposal_generator.rpn_head.`` -> ``rpn_head.``,
``roi_heads.mask_head.`` -> ``mask_head.``; everything else keeps its name. Dropped as training-only or rebuilt:
the checkpoint's own classifiers (``cls_score.zs_weight`` / CoDet's ``detection_weight`` / VLPart's
``zs_weight_inference``: prompts replace them), CoDet's caption text encoder (``text_encoder.*``) and
concept-grouping heads (``box_predictor.k.fc1/fc2/weight_transform``), the fed-loss ``freq_weight``, the timm in21k classifier
(``bottom_up.base.fc``), BN ``num_batches_tracked`` counters, ``pixel_mean/std`` and Swin's
``relative_position_index`` (a fixed function of the window). Anything else unknown, or anything missing, is an
error that names the keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model_adapters.detic_net.model import DeticArch, DeticNet
from model_adapters.detic_net.vlpart import VLPartArch, VLPartNet

_RENAMES = (
    ("proposal_generator.centernet_head.", "centernet_head."),
    ("proposal_generator.rpn_head.", "rpn_head."),
    ("roi_heads.mask_head.", "mask_head."),
)
_DROPPED = re.compile(
    r"^text_encoder\."
    r"|^roi_heads\.box_predictor\.(\d+\.)?(cls_score\.(zs_weight|detection_weight|zs_weight_inference)"
    r"|fc1\.|fc2\.|weight_transform\.|freq_weight)"
    r"|num_batches_tracked$|^backbone\.bottom_up\.base\.fc\.|^pixel_(mean|std)$|relative_position_index$"
)


class DeticCheckpointError(ValueError):
    """The file is not a Detic/CoDet checkpoint in the layout this port knows (names the offending keys)."""


def map_state_dict(raw: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """detectron2 checkpoint (or bare state dict) -> this port's key names; values pass through (shapes work)."""
    state = raw.get("model", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping):
        raise DeticCheckpointError(f"{source} is not a Detic checkpoint: it holds a {type(raw).__name__}")
    out = {}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def count_indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    """For keys matching ``pattern`` (two groups: outer, inner index): how many inner items each outer one has."""
    found: dict[int, int] = {}
    for key in state:
        if m := re.fullmatch(pattern, key):
            found[int(m[1])] = max(found.get(int(m[1]), 0), int(m[2]) + 1)
    return [found[i] for i in sorted(found)]


def _swin_sizes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Swin embed width, depths, heads and window off the weights (the bias tables are (2w-1)^2 x heads)."""
    depths = count_indices(state, r"backbone\.bottom_up\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.weight")
    tables = [state[f"backbone.bottom_up.layers.{i}.blocks.0.attn.relative_position_bias_table"]
              for i in range(len(depths))]  # fmt: skip
    return dict(
        swin_embed_dim=state["backbone.bottom_up.patch_embed.proj.weight"].shape[0],
        swin_depths=tuple(depths),
        swin_heads=tuple(t.shape[1] for t in tables),
        swin_window=(math.isqrt(tables[0].shape[0]) + 1) // 2,
    )


def _resnet_sizes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Blocks per stage, stem and base widths of the timm ResNet, off the weights."""
    return dict(
        resnet_layers=tuple(count_indices(state, r"backbone\.bottom_up\.base\.layer(\d+)\.(\d+)\.conv1\.weight")),
        resnet_stem=state["backbone.bottom_up.base.conv1.weight"].shape[0],
        resnet_base_planes=state["backbone.bottom_up.base.layer1.0.conv1.weight"].shape[0],
    )


def arch_from_state_dict(state: Mapping[str, Any], source: str = "checkpoint") -> DeticArch | VLPartArch:
    """Read the network's sizes off mapped weights (anything with ``.shape``); an RPN means VLPart."""
    swin = "backbone.bottom_up.patch_embed.proj.weight" in state
    try:
        if "rpn_head.conv.weight" in state:
            # VLPart: Swin-B comes with the cascade (``box_head.0``), R50 with one stage (``box_head``).
            stage = "0." if swin else ""
            return VLPartArch(
                backbone="swin" if swin else "resnet",
                **(_swin_sizes(state) if swin else _resnet_sizes(state)),
                fpn_channels=state["backbone.fpn_lateral2.weight"].shape[0],
                fc_dim=state[f"roi_heads.box_head.{stage}fc1.weight"].shape[0],
                zs_dim=state[f"roi_heads.box_predictor.{stage}cls_score.linear.weight"].shape[0],
                mask_conv_dim=state["mask_head.mask_fcn1.weight"].shape[0],
            )
        return DeticArch(
            "swin" if swin else "resnet",
            **(_swin_sizes(state) if swin else _resnet_sizes(state)),
            fpn_channels=state["backbone.fpn_lateral3.weight"].shape[0],
            fc_dim=state["roi_heads.box_head.0.fc1.weight"].shape[0],
            zs_dim=state["roi_heads.box_predictor.0.cls_score.linear.weight"].shape[0],
            mask_conv_dim=state["mask_head.mask_fcn1.weight"].shape[0],
        )
    except KeyError as exc:
        raise DeticCheckpointError(
            f"{source} is not a Detic/CoDet/VLPart checkpoint: missing key {exc.args[0]}"
        ) from exc


def check_keys(expected: Mapping[str, Any], state: Mapping[str, Any], source: str) -> None:
    """Raise ``DeticCheckpointError`` naming missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]  # fmt: skip

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    parts = [f"{label}: {few(keys)}" for label, keys in found.items() if keys]
    if parts:
        raise DeticCheckpointError(f"{source} does not fit the Detic/CoDet layout; " + "; ".join(parts))


def build_net(arch: DeticArch | VLPartArch) -> DeticNet | VLPartNet:
    """The network an architecture describes, random weights."""
    return VLPartNet(arch) if isinstance(arch, VLPartArch) else DeticNet(arch)


def expected_keys(net: DeticNet | VLPartNet) -> dict[str, torch.Tensor]:
    """The network's state-dict entries a checkpoint must provide (Swin's index buffers are rebuilt)."""
    return {k: v for k, v in net.state_dict().items() if not k.endswith("relative_position_index")}


def build_from_state_dict(raw: Mapping[str, Any], source: str = "checkpoint") -> DeticNet | VLPartNet:
    """Build the network the weights describe and load them strictly."""
    state = map_state_dict(raw, source)
    net = build_net(arch_from_state_dict(state, source))
    check_keys(expected_keys(net), state, source)
    net.load_state_dict(state, strict=False)
    return net.eval()


def load_detic(path: str | Path) -> DeticNet | VLPartNet:
    """Load a local ``.pth`` checkpoint (Detic, CoDet or VLPart; Swin-B or R50)."""
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    return build_from_state_dict(raw, str(path))
