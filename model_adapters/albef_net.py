"""ALBEF ("Align before Fuse") rebuilt on timm's ViT and transformers' BERT.

The original code pins timm 0.4 and transformers 4.8 and carries its own BERT fork; this port keeps the
released checkpoints (``ALBEF.pth``, ``ALBEF_4M.pth``, ``mscoco.pth``, ``flickr30k.pth``) usable with current
libraries and reproduces the original outputs. Only ITC (contrastive) and ITM (matching) inference is covered:
momentum encoders, queues and the MLM head are training-only and dropped on load.

torch, timm and transformers are imported lazily: the backend imports this module without the model extras.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TEXT_LENGTH = 30
PATCH_SIZE = 16
# bert-base-uncased plus ALBEF's two extra fields (configs/config_bert.json in the original repo).
BERT_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "pad_token_id": 0, "fusion_layer": 6, "encoder_width": 768,
}  # fmt: skip
_TRAINING_ONLY = frozenset({"image_queue", "text_queue", "idx_queue", "queue_ptr"})
# Keys whose shapes size the network: without them the file cannot be ALBEF (checked before reading shapes).
_REQUIRED = (
    "visual_encoder.pos_embed",
    "visual_encoder.blocks.0.mlp.fc1.weight",
    "text_encoder.embeddings.word_embeddings.weight",
    "text_encoder.embeddings.position_embeddings.weight",
    "text_encoder.embeddings.token_type_embeddings.weight",
    "text_encoder.encoder.layer.0.intermediate.dense.weight",
    "vision_proj.weight",
)
_CROSS = re.compile(r"text_encoder\.encoder\.layer\.(\d+)\.crossattention\.")


class AlbefCheckpointError(ValueError):
    """Raised when a file does not hold the ALBEF retrieval/pre-training key layout."""


class AlbefModel(Protocol):
    """The loaded network (a ``torch.nn.Module`` in eval mode); typed here so callers need no torch import."""

    image_res: int
    fusion_layer: int

    def encode_image(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """Return ViT tokens (B, 1+P, W) for fusion and the L2-normalised projected CLS (B, E) for ITC."""
        ...

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run the text-only layers; return hidden states (N, L, H) and the normalised projected CLS."""
        ...

    def itc_logits(self, image_feat: Tensor, text_feat: Tensor) -> Tensor:
        """Cosine similarity divided by the learned temperature, (B, N)."""
        ...

    def fuse(self, image_embeds: Tensor, text_embeds: Tensor, attention_mask: Tensor) -> Tensor:
        """Run the fusion layers (non-causal self-attention, cross-attention to all image tokens)."""
        ...

    def itm_logits(self, image_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Match logits (N, 2) for paired rows; column 1 is "matches", as in the original ``itm_head``."""
        ...

    def __call__(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Score all image×text pairs: features, ``sim``, ``logits_itc``, ``probs_itc``, ``fused_cls``, ITM."""
        ...


def canonical_state_dict(raw: Any, source: str = "checkpoint") -> tuple[dict[str, Any], dict[str, Any]]:
    """Reduce either official layout to the inference keys this port uses, and return it with the config.

    Accepts ``{'model': state_dict, 'config': ...}`` or a bare state dict. Momentum copies (``*_m``), queues,
    the MLM head and ``position_ids`` buffers are dropped; the pre-training prefix ``text_encoder.bert.``
    becomes the retrieval one, ``text_encoder.``. Values pass through untouched (works on key→shape listings).
    """
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        state, config = raw["model"], raw.get("config") or {}
    elif isinstance(raw, Mapping):
        state, config = raw, {}
    else:
        raise AlbefCheckpointError(f"{source} is not an ALBEF checkpoint: it holds a {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in state.items():
        head = str(key).split(".", 1)[0]
        if head.endswith("_m") or head in _TRAINING_ONLY or key.startswith("text_encoder.cls."):
            continue  # momentum encoders, queues, MLM head: training only
        if not key.endswith("position_ids"):
            out[re.sub(r"^text_encoder\.bert\.", "text_encoder.", key)] = value
    return out, dict(config) if isinstance(config, Mapping) else {}


def _layout_error(source: str, missing: list[str], unexpected: list[str], shapes: Sequence[str] = ()) -> Exception:
    def few(keys: Sequence[str]) -> str:
        return ", ".join(list(keys)[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    parts = [f"{label}: {few(keys)}" for label, keys in found.items() if keys]
    return AlbefCheckpointError(f"{source} is not an ALBEF checkpoint (ITC/ITM layout); " + "; ".join(parts))


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize ViT position embeddings (1, 1+g*g, W) to a grid×grid patch grid, keeping the CLS entry.

    Bicubic, ``align_corners=False`` and no antialiasing, as the original fine-tuning did, so loading the
    pre-training weights at 384 px yields exactly the tensors its fine-tunes started from.
    """
    import torch
    import torch.nn.functional as F

    old = math.isqrt(pos_embed.shape[1] - 1)
    if old == grid:
        return pos_embed
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def build_albef(
    text_config: Mapping[str, Any] | None = None,
    *,
    image_res: int = 384,
    vision_width: int = 768,
    vision_depth: int = 12,
    vision_heads: int = 12,
    vision_mlp_ratio: float = 4.0,
    embed_dim: int = 256,
    attn_implementation: str = "sdpa",
    device: str | None = None,
) -> AlbefModel:
    """Build an ALBEF network without weights; the defaults are the released ViT-B/16 + bert-base model.

    ``text_config`` is a ``config_bert.json``-style dict with ``fusion_layer`` (default: bert-base, fusion at
    layer 6); ``image_res`` is 256 for the pre-training checkpoints and 384 for the retrieval fine-tunes. The
    ViT width must equal the BERT width, since transformers' cross-attention keys take ``hidden_size`` inputs.
    ``attn_implementation`` is ``"sdpa"`` or ``"eager"`` (both take the additive masks built here); use
    ``device="meta"`` to inspect the full-size layout without allocating memory.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', not {attn_implementation!r}")
    import torch
    from transformers import BertConfig

    config = BertConfig(**{**(BERT_BASE_CONFIG if text_config is None else text_config)})
    config._attn_implementation = attn_implementation
    if vision_width != config.hidden_size:
        raise ValueError(f"vision width {vision_width} != text width {config.hidden_size}; ALBEF ties them")
    with torch.device(device or "cpu"):
        vision = (vision_width, vision_depth, vision_heads, vision_mlp_ratio)
        net = _network_class()(config, image_res, vision, embed_dim)
    return net.eval()


def load_albef(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    text_config: Mapping[str, Any] | str | Path | None = None,
    image_res: int | None = None,
    vision_heads: int | None = None,
    attn_implementation: str = "sdpa",
    cache_dir: str | Path | None = None,
) -> AlbefModel:
    """Load an official ALBEF checkpoint (local path or http(s) URL) with strict key matching.

    Everything the weight shapes fix (widths, depths, vocabulary, fusion layer, embed dim) is read from the
    weights; the BERT config only supplies what they cannot (heads, activation, LayerNorm eps).

    Args:
        checkpoint: ``.pth`` path or URL; URLs are downloaded once via ``torch.hub`` into ``cache_dir``.
        device: Device for the returned model.
        text_config: ``config_bert.json``-style dict or path. Default: the checkpoint's
            ``config['bert_config']`` (a dict, an existing path, or a file of that name beside the checkpoint),
            else bert-base values.
        image_res: Target resolution; default the checkpoint's ``config['image_res']``, else its position
            grid. Position embeddings are resized when it differs from the grid stored in the file.
        vision_heads: ViT heads; default the text encoder's head count (12/12 in every released model).
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        cache_dir: Download folder for URLs (default: torch hub's checkpoint dir).

    Raises:
        AlbefCheckpointError: When keys or shapes do not match the ALBEF layout.
    """
    import torch

    source = str(checkpoint)
    if source.startswith(("http://", "https://")):
        model_dir = None if cache_dir is None else str(cache_dir)
        raw = torch.hub.load_state_dict_from_url(source, model_dir, map_location="cpu", weights_only=True)
    else:
        raw = torch.load(source, map_location="cpu", weights_only=True)
    state, ck_config = canonical_state_dict(raw, source)
    absent = [k for k in _REQUIRED if k not in state]
    cross = sorted(int(m[1]) for k in state if (m := _CROSS.match(k)))
    if absent or not cross:
        raise _layout_error(source, absent or ["text_encoder.encoder.layer.N.crossattention.*"], sorted(state))

    def count(pattern: str) -> int:
        return len({m[1] for k in state if (m := re.fullmatch(pattern, k))})

    cfg = {**BERT_BASE_CONFIG, **_resolve_text_config(text_config, ck_config, source)}
    words = state["text_encoder.embeddings.word_embeddings.weight"]
    cfg.update(
        vocab_size=words.shape[0], hidden_size=words.shape[1], encoder_width=words.shape[1], fusion_layer=cross[0],
        num_hidden_layers=count(r"text_encoder\.encoder\.layer\.(\d+)\.output\.dense\.weight"),
        intermediate_size=state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["text_encoder.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_encoder.embeddings.token_type_embeddings.weight"].shape[0],
    )  # fmt: skip
    pos = state["visual_encoder.pos_embed"]
    res = image_res or int(ck_config.get("image_res") or math.isqrt(pos.shape[1] - 1) * PATCH_SIZE)
    state["visual_encoder.pos_embed"] = resize_pos_embed(pos, res // PATCH_SIZE)
    model: Any = build_albef(
        cfg, image_res=res, vision_width=pos.shape[-1], vision_heads=vision_heads or cfg["num_attention_heads"],
        vision_depth=count(r"visual_encoder\.blocks\.(\d+)\.norm1\.weight"),
        vision_mlp_ratio=state["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0] / pos.shape[-1],
        embed_dim=state["vision_proj.weight"].shape[0], attn_implementation=attn_implementation,
    )  # fmt: skip
    expected = model.state_dict()
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected or shapes:
        raise _layout_error(source, missing, unexpected, shapes)
    model.load_state_dict(state, strict=True)
    return model.to(device)


def _resolve_text_config(
    given: Mapping[str, Any] | str | Path | None, ck_config: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """Pick the BERT config: explicit argument, then the checkpoint's ``bert_config`` entry, else nothing."""
    if isinstance(given, Mapping):
        return dict(given)
    if given is not None:
        return json.loads(Path(given).read_text(encoding="utf-8"))
    named = ck_config.get("bert_config")
    if isinstance(named, Mapping):
        return dict(named)
    if isinstance(named, str) and not source.startswith(("http://", "https://")):
        for candidate in (Path(named), Path(source).parent / Path(named).name):
            if candidate.is_file():
                return json.loads(candidate.read_text(encoding="utf-8"))
    return {}


class AlbefTokenizer:
    """ALBEF's text side: ``[CLS] text`` with no ``[SEP]``, at most 30 tokens, padded to the longest text.

    The original tokenizer subclass drops ``[SEP]`` for single texts; the checkpoints were trained that way,
    so adding it shifts the scores.
    """

    def __init__(self, vocab: str | Path = "bert-base-uncased", max_length: int = MAX_TEXT_LENGTH) -> None:
        """Load the vocabulary from a ``vocab.txt`` file, a local tokenizer folder or a Hub id."""
        from transformers import BertTokenizer

        path = Path(vocab)
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            self._tok = BertTokenizer(vocab={token: i for i, token in enumerate(lines)}, do_lower_case=True)
        else:
            self._tok = BertTokenizer.from_pretrained(str(vocab))
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``input_ids`` and ``attention_mask`` (N, L) int64 tensors."""
        import torch

        limit = self.max_length - 1  # room for [CLS]
        pieces = self._tok(list(texts), add_special_tokens=False, truncation=True, max_length=limit)
        rows = [[self._tok.cls_token_id, *ids] for ids in pieces["input_ids"]]
        ids = torch.full((len(rows), max(map(len, rows))), self._tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask


def preprocess_images(images: Sequence[Image.Image], image_res: int) -> torch.Tensor:
    """PIL bicubic resize to image_res², no crop, CLIP mean/std: the original evaluation transform.

    The original applies torchvision ``Resize((R, R), BICUBIC)`` to PIL images, i.e. PIL's (antialiased)
    bicubic, not ``torch.nn.functional.interpolate``; the two differ noticeably when downscaling photos.
    """
    import numpy as np
    import torch
    from PIL import Image

    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    size, bicubic = (image_res, image_res), Image.Resampling.BICUBIC
    pixels = np.stack([np.asarray(im.convert("RGB").resize(size, bicubic), np.float32) for im in images])
    return torch.from_numpy((pixels / 255 - mean) / std).permute(0, 3, 1, 2).contiguous()


@cache
def _network_class() -> type:
    """Define the nn.Module on first use, so importing this module never imports torch."""
    import torch
    import torch.nn.functional as F
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn
    from transformers import BertModel
    from transformers.models.bert.modeling_bert import BertLayer

    class AlbefNet(nn.Module):
        def __init__(self, config: Any, image_res: int, vision: tuple[int, int, int, float], dim: int):
            super().__init__()
            width, depth, heads, mlp = vision
            self.image_res, self.fusion_layer = image_res, int(config.fusion_layer)
            self.visual_encoder = VisionTransformer(
                img_size=image_res, patch_size=PATCH_SIZE, embed_dim=width, depth=depth, num_heads=heads,
                mlp_ratio=mlp, qkv_bias=True, num_classes=0, weight_init="skip",
            )  # fmt: skip
            self.text_encoder = BertModel(config, add_pooling_layer=False)
            # transformers only builds cross-attention for decoders, whose self-attention is causal, but ALBEF's
            # fusion layers are bidirectional: build decoder layers, then clear their causal flag. _layers() hands
            # every layer a padding-only mask, so no causal triangle enters through the mask either.
            fusion = copy.deepcopy(config)
            fusion.is_decoder, fusion.add_cross_attention = True, True
            for i in range(self.fusion_layer, config.num_hidden_layers):
                layer = BertLayer(fusion, layer_idx=i)
                layer.attention.self.is_causal = False
                self.text_encoder.encoder.layer[i] = layer
            self.vision_proj = nn.Linear(width, dim)
            self.text_proj = nn.Linear(config.hidden_size, dim)
            self.itm_head = nn.Linear(config.hidden_size, 2)
            self.temp = nn.Parameter(torch.tensor(0.07))

        def _layers(self, hidden, attention_mask, start, stop, image_embeds=None):
            # Additive (N, 1, 1, L) padding mask, accepted unchanged by both eager and sdpa attention.
            neg = torch.finfo(hidden.dtype).min
            mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * neg
            for layer in self.text_encoder.encoder.layer[start:stop]:
                hidden = layer(hidden, mask, image_embeds)
            return hidden

        def encode_image(self, pixel_values):
            embeds = self.visual_encoder.forward_features(pixel_values)
            return embeds, F.normalize(self.vision_proj(embeds[:, 0]), dim=-1)

        def encode_text(self, input_ids, attention_mask):
            hidden = self.text_encoder.embeddings(input_ids=input_ids)
            hidden = self._layers(hidden, attention_mask, 0, self.fusion_layer)
            return hidden, F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

        def itc_logits(self, image_feat, text_feat):
            return image_feat @ text_feat.t() / self.temp

        def fuse(self, image_embeds, text_embeds, attention_mask):
            return self._layers(text_embeds, attention_mask, self.fusion_layer, None, image_embeds)

        def itm_logits(self, image_embeds, input_ids, attention_mask):
            text_embeds, _ = self.encode_text(input_ids, attention_mask)
            return self.itm_head(self.fuse(image_embeds, text_embeds, attention_mask)[:, 0])

        def forward(self, pixel_values, input_ids, attention_mask):
            image_embeds, image_feat = self.encode_image(pixel_values)
            text_embeds, text_feat = self.encode_text(input_ids, attention_mask)
            n_img, n_txt = image_feat.shape[0], text_feat.shape[0]
            fused = self.fuse(
                image_embeds.repeat_interleave(n_txt, dim=0),
                text_embeds.repeat(n_img, 1, 1),
                attention_mask.repeat(n_img, 1),
            )[:, 0].reshape(n_img, n_txt, -1)
            sim = image_feat @ text_feat.t()
            itm = self.itm_head(fused)
            return {
                "image_embeds": image_embeds, "image_feat": image_feat, "text_embeds": text_embeds,
                "text_feat": text_feat, "sim": sim, "logits_itc": sim / self.temp,
                "probs_itc": (sim / self.temp).softmax(dim=1), "fused_cls": fused, "itm_logits": itm,
                "itm_prob": itm.softmax(dim=-1)[..., 1],
            }  # fmt: skip

    return AlbefNet
