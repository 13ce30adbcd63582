"""Parity tests for the ALBEF port against fixtures made with the original code (tests/fixtures/albef)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_adapters.albef_net import (
    CLIP_MEAN,
    CLIP_STD,
    AlbefCheckpointError,
    AlbefTokenizer,
    build_albef,
    canonical_state_dict,
    load_albef,
    preprocess_images,
    resize_pos_embed,
)

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "albef"
BERT_SMALL = FIX / "config_bert_small.json"
CASES = {
    "pretrain_64": ("albef_tiny_pretrain.pth", "image_64"),
    "retrieval_96": ("albef_tiny_retrieval96.pth", "image_96"),
}
ATOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(FIX / "albef_tiny_reference.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tokens(ref: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return AlbefTokenizer(FIX / "vocab.txt")(ref["texts"])


def max_errors(out: dict, expected: dict) -> dict[str, float]:
    return {k: (out[k] - v).abs().max().item() for k, v in expected.items() if k in out}


def test_module_imports_without_torch() -> None:
    code = (
        "import sys; import model_adapters.albef_net as m; "
        "heavy = {'torch', 'timm', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy; assert callable(m.load_albef)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_tokenizer_matches_reference(ref: dict, tokens: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, mask = tokens
    assert torch.equal(ids, ref["input_ids"])
    assert torch.equal(mask, ref["attention_mask"])


def test_tokenizer_cls_only_and_truncates_to_30() -> None:
    ids, mask = AlbefTokenizer(FIX / "vocab.txt")(["a cat " * 40, "dog"])
    assert ids.shape == (2, 30)
    assert (ids[:, 0] == 3).all()  # [CLS]
    assert not (ids == 4).any()  # no [SEP], as in ALBEF
    assert mask[1].tolist() == [1, 1] + [0] * 28


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_match_reference(case: str, attn: str, ref: dict, tokens: tuple) -> None:
    ckpt, image_key = CASES[case]
    model = load_albef(FIX / ckpt, text_config=BERT_SMALL, attn_implementation=attn)
    ids, mask = tokens
    with torch.no_grad():
        out = model(ref[image_key], ids, mask)
        expected = ref[case]
        errors = max_errors(out, expected)
        assert set(errors) >= {"image_feat", "text_feat", "sim", "logits_itc", "probs_itc", "fused_cls"}
        assert set(errors) >= {"image_embeds", "text_embeds", "itm_logits", "itm_prob"}
        assert max(errors.values()) < ATOL, errors
        # The paired entry points give the same numbers as the all-pairs forward.
        image_embeds, image_feat = model.encode_image(ref[image_key])
        _, text_feat = model.encode_text(ids, mask)
        assert torch.allclose(model.itc_logits(image_feat, text_feat), expected["logits_itc"], atol=ATOL)
        n_txt = ids.shape[0]
        for i in range(image_embeds.shape[0]):
            paired = model.itm_logits(image_embeds[i : i + 1].expand(n_txt, -1, -1), ids, mask)
            assert torch.allclose(paired, expected["itm_logits"][i], atol=ATOL)
        if "itm_logits_multimodal_img0" in expected:
            assert torch.allclose(out["itm_logits"][0], expected["itm_logits_multimodal_img0"], atol=ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_strict_keys_match_checkpoint(case: str) -> None:
    raw = torch.load(FIX / CASES[case][0], map_location="cpu", weights_only=True)
    state, config = canonical_state_dict(raw)
    model = load_albef(FIX / CASES[case][0], text_config=BERT_SMALL)
    assert set(model.state_dict()) == set(state)
    assert model.image_res == config["image_res"]
    assert model.fusion_layer == 2


def test_bert_config_found_beside_checkpoint(ref: dict, tokens: tuple) -> None:
    # config['bert_config'] names "ref/out/config_bert_small.json"; a file of that name sits beside the .pth.
    model = load_albef(FIX / "albef_tiny_pretrain.pth")
    assert model.text_encoder.config.num_attention_heads == 4
    with torch.no_grad():
        out = model(ref["image_64"], *tokens)
    assert max(max_errors(out, ref["pretrain_64"]).values()) < ATOL


def test_pretrain_at_96px_reproduces_retrieval(ref: dict, tokens: tuple) -> None:
    pretrain = torch.load(FIX / "albef_tiny_pretrain.pth", map_location="cpu", weights_only=True)["model"]
    retrieval = torch.load(FIX / "albef_tiny_retrieval96.pth", map_location="cpu", weights_only=True)["model"]
    resized = resize_pos_embed(pretrain["visual_encoder.pos_embed"], 6)
    assert torch.equal(resized, retrieval["visual_encoder.pos_embed"])
    model = load_albef(FIX / "albef_tiny_pretrain.pth", text_config=BERT_SMALL, image_res=96)
    with torch.no_grad():
        out = model(ref["image_96"], *tokens)
    assert max(max_errors(out, ref["retrieval_96"]).values()) < ATOL


def test_bare_state_dict_layout(tmp_path: Path, ref: dict, tokens: tuple) -> None:
    bare = torch.load(FIX / "albef_tiny_retrieval96.pth", map_location="cpu", weights_only=True)["model"]
    torch.save(bare, tmp_path / "bare.pth")
    model = load_albef(tmp_path / "bare.pth", text_config=json.loads(BERT_SMALL.read_text()))
    assert model.image_res == 96  # from the 6x6 position grid, as there is no config
    with torch.no_grad():
        out = model(ref["image_96"], *tokens)
    assert max(max_errors(out, ref["retrieval_96"]).values()) < ATOL


def test_fusion_self_attention_is_bidirectional(ref: dict, tokens: tuple) -> None:
    model = load_albef(FIX / "albef_tiny_pretrain.pth", text_config=BERT_SMALL)
    fusion = model.text_encoder.encoder.layer[model.fusion_layer :]
    assert len(fusion) == 2
    assert all(not layer.attention.self.is_causal for layer in fusion)
    ids, mask = tokens
    with torch.no_grad():
        image_embeds, _ = model.encode_image(ref["image_64"][:1].expand(len(ids), -1, -1, -1))
        text_embeds, _ = model.encode_text(ids, mask)
        changed = text_embeds.clone()
        changed[:4, -1] += 1.0  # last token of fully unpadded rows; causal attention would hide it from CLS
        before = model.fuse(image_embeds, text_embeds, mask)[:4, 0]
        after = model.fuse(image_embeds, changed, mask)[:4, 0]
    assert (before - after).abs().amax(dim=-1).min() > 1e-3


@pytest.mark.parametrize(("listing", "res"), [("keys_pretrain_256.json", 256), ("keys_retrieval_384.json", 384)])
def test_full_size_key_listing_maps_one_to_one(listing: str, res: int) -> None:
    shapes, _ = canonical_state_dict(json.loads((FIX / listing).read_text()))
    model = build_albef(image_res=res, device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 414
    assert ours == shapes


def _save(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    return path


def test_non_albef_layout_raises_clear_error(tmp_path: Path) -> None:
    vit = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8), "head.weight": torch.zeros(2, 8)}
    with pytest.raises(AlbefCheckpointError, match="not an ALBEF checkpoint") as info:
        load_albef(_save(tmp_path, {"model": vit}))
    assert "visual_encoder.pos_embed" in str(info.value) and "head.weight" in str(info.value)
    with pytest.raises(AlbefCheckpointError, match="not an ALBEF checkpoint"):
        load_albef(_save(tmp_path, torch.zeros(3)))


def test_extra_or_missing_keys_are_listed(tmp_path: Path) -> None:
    raw = torch.load(FIX / "albef_tiny_pretrain.pth", map_location="cpu", weights_only=True)
    raw["model"]["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(40, 64)
    del raw["model"]["itm_head.bias"]
    with pytest.raises(AlbefCheckpointError, match="not an ALBEF checkpoint") as info:
        load_albef(_save(tmp_path, raw), text_config=BERT_SMALL)
    message = str(info.value)
    assert "missing keys: itm_head.bias" in message
    assert "unexpected keys: text_decoder.bert.embeddings.word_embeddings.weight" in message


def test_preprocess_matches_original_pil_pipeline() -> None:
    # The reference images are already-normalised random tensors (no raw pixels to check against), so compare
    # with the original evaluation transform: torchvision Resize((R, R), BICUBIC) on PIL, ToTensor, Normalize.
    transforms = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)),  # downscale, non-square
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)),  # upscale, grayscale
    ]
    original = transforms.Compose(
        [
            transforms.Resize((64, 64), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    expected = torch.stack([original(im.convert("RGB")) for im in images])
    got = preprocess_images(images, 64)
    assert got.shape == (2, 3, 64, 64) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6)
    # torch's bicubic (no antialias) is measurably different when downscaling: the choice matters.
    arr = torch.from_numpy(np.asarray(images[0], np.float32) / 255).permute(2, 0, 1)[None]
    tensor_resize = torch.nn.functional.interpolate(arr, size=(64, 64), mode="bicubic", align_corners=False)
    normalised = (tensor_resize - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert (normalised[0] - got[0]).abs().max() > 0.05
