"""Tiny random-weight vision models, built fully offline, for tests.

Each ``build_<family>(path)`` writes a directory that loads back through the real ``from_pretrained``
code (the same code path that takes a hub id on a user's machine), so tests exercise prelabel's real
loaders without Hugging Face Hub access. Weights are random (``torch.manual_seed(0)`` before every
model), each model is under 1 MB, and processors use 32-256 px inputs, so a forward pass takes
milliseconds on CPU.

Tokenizers are built in Python from tiny in-memory vocabularies (no downloads); SigLIP's sentencepiece
model is trained on the fly. See ``/work/shared/TINY-MODELS.md`` for timings and per-family gotchas.

Importing this module sets ``HF_HUB_OFFLINE=1`` (unless already set), so a hub id fails in seconds
instead of retrying for minutes. It only takes effect if transformers was not imported earlier.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers as tfm

# --------------------------------------------------------------------------------------------------
# Shared constants
# --------------------------------------------------------------------------------------------------

SEED = 0
WORDS = ("a", "an", "the", "of", "photo", "cat", "dog", "person", "car", "remote", "bird", "tree", "house")
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
PUNCTUATION = ".,!?;:'\"()-_/<>[]{}"

# A 1-layer, 32-wide transformer; shared by the text towers of most families.
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}
# The same transformer as a 32 px ViT with 8 px patches (16 patches + CLS).
TINY_VISION: dict[str, Any] = {**TINY_TEXT, "image_size": 32, "patch_size": 8}
# Token ids of ``clip_tokenizer()``: specials come last, so bos is 512 and eos/pad 513.
CLIP_VOCAB_SIZE = 514
CLIP_TEXT_IDS: dict[str, int] = {"bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513}
# A CLIP image processor that resizes and center-crops to 32 px.
TINY_CLIP_IMAGE: dict[str, Any] = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
# Tiny HF Swin backbone (Grounding DINO, OmDet-Turbo): 4 stages of 1 block, 8..64 channels.
TINY_SWIN: dict[str, Any] = {
    "model_type": "swin",
    "embed_dim": 8,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 1, 1],
    "window_size": 7,
    "out_indices": [2, 3, 4],
}
# Minimal chat template for LLaVA: accepts string content or a list of {"type": "image"|"text"} parts.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Florence-2's parser needs an entry per task type, else post-processing raises "Unsupported parse task".
FLORENCE2_POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "ocr": {"pattern": r"(.+?)" + r"<loc_(\d+)>" * 8, "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}
OPEN_CLIP_MODEL_NAME = "prelabel-tiny-ViT"
FASTVIT_NAME = "fastvit_t8"


# --------------------------------------------------------------------------------------------------
# Tokenizers (no files, no downloads)
# --------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> list[str]:
    """Return GPT-2's byte-to-unicode table: 256 printable symbols, in byte order of the BPE vocab."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def bert_tokenizer(**kwargs: Any) -> tfm.BertTokenizer:
    """WordPiece tokenizer over ``WORDS``, punctuation and single characters (about 100 tokens)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PUNCTUATION, *LETTERS]
    tokens += ["##" + c for c in LETTERS]
    return tfm.BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))}, **kwargs)


def clip_tokenizer(**kwargs: Any) -> tfm.CLIPTokenizer:
    """Byte-level CLIP BPE without merges; 514 tokens with the specials last (bos=512, eos=pad=513).

    OWL-ViT/OWLv2 mask every query whose first token id is 0, so the bos id must not be 0.
    """
    symbols = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    return tfm.CLIPTokenizer(vocab=vocab, merges=[], **kwargs)


def xlmr_tokenizer(**kwargs: Any) -> tfm.XLMRobertaTokenizer:
    """Unigram XLM-R tokenizer from an in-memory ``(piece, score)`` list (no sentencepiece file)."""
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [("▁", -2.0)]
    pieces += [(c, -3.0) for c in LETTERS + ".,!?"]
    return tfm.XLMRobertaTokenizer(vocab=pieces, **kwargs)


def bart_tokenizer(**kwargs: Any) -> tfm.BartTokenizer:
    """Byte-level BART BPE without merges: ``<s>``=0, ``<pad>``=1, ``</s>``=2, then the 256 byte symbols."""
    vocab: dict[str, int] = {}
    for token in ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *bytes_to_unicode()]:
        vocab.setdefault(token, len(vocab))
    return tfm.BartTokenizer(vocab=vocab, merges=[], **kwargs)


def gpt2_tokenizer(**kwargs: Any) -> tfm.GPT2Tokenizer:
    """Byte-level GPT-2 BPE without merges: the 256 byte symbols, then ``<|endoftext|>`` (id 256)."""
    vocab = {s: i for i, s in enumerate(bytes_to_unicode())}
    vocab["<|endoftext|>"] = len(vocab)
    return tfm.GPT2Tokenizer(vocab=vocab, merges=[], **kwargs)


def gemma_tokenizer(**kwargs: Any) -> tfm.GemmaTokenizer:
    """Gemma BPE (SigLIP2's tokenizer) without merges over ``▁``, letters and punctuation."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁", *LETTERS, *PUNCTUATION]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return tfm.GemmaTokenizer(vocab=vocab, merges=[], **kwargs)


def siglip_tokenizer(directory: Path, **kwargs: Any) -> tfm.SiglipTokenizer:
    """Train a tiny unigram sentencepiece model into ``directory/spiece.model`` and wrap it.

    ``SiglipTokenizer`` is the slow sentencepiece tokenizer: it needs the ``sentencepiece`` and ``protobuf``
    packages and a real ``.model`` file. Training takes about 0.1 s. Ids: pad=0, eos=1, unk=2, no bos.
    """
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS), "a photo of a cat", "a remote", LETTERS] * 20),
        model_writer=model,
        vocab_size=80,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    vocab_file = directory / "spiece.model"
    vocab_file.write_bytes(model.getvalue())
    return tfm.SiglipTokenizer(vocab_file=str(vocab_file), **kwargs)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _save(path: Path, model_cls: type[tfm.PreTrainedModel], config: tfm.PretrainedConfig, processor: Any) -> Path:
    """Seed, build ``model_cls(config)`` with random weights, and save it with ``processor`` into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model_cls(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _clip_text(vocab_size: int = CLIP_VOCAB_SIZE, max_position_embeddings: int = 77) -> dict[str, Any]:
    """Tiny CLIP text tower config (dict) whose special ids match ``clip_tokenizer()``."""
    return {
        **TINY_TEXT,
        **CLIP_TEXT_IDS,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
    }


def _grounding_dino_config(config_cls: type[tfm.PretrainedConfig], vocab_size: int) -> tfm.PretrainedConfig:
    """Config shared by Grounding DINO and MM Grounding DINO: HF Swin backbone, BERT text, 2 decoders."""
    return config_cls(
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # 1 fails in tie_weights (``tie_weights_keys ... bbox_embed`` ValueError)
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=20,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        backbone_config=tfm.SwinConfig(**{**TINY_SWIN, "image_size": 98}),
        max_text_len=256,
        text_config={
            **TINY_TEXT,
            "model_type": "bert",
            "vocab_size": vocab_size,
            "max_position_embeddings": 256,
        },
    )


def _grounding_dino_processor() -> tfm.GroundingDinoProcessor:
    """Grounding DINO processor: 96-128 px images and a BERT tokenizer that pads to at most 256 tokens."""
    image_processor = tfm.GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128})
    return tfm.GroundingDinoProcessor(image_processor, bert_tokenizer(model_max_length=256))


# --------------------------------------------------------------------------------------------------
# Zero-shot detection
# --------------------------------------------------------------------------------------------------


def build_grounding_dino(path: Path) -> Path:
    """``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor`` (AutoProcessor works).

    Post-process with ``processor.post_process_grounded_object_detection(out, inputs.input_ids, ...)``. With
    ``text_threshold=0`` every box's ``text_labels`` is the whole prompt.
    """
    processor = _grounding_dino_processor()
    config = _grounding_dino_config(tfm.GroundingDinoConfig, len(processor.tokenizer))
    return _save(path, tfm.GroundingDinoForObjectDetection, config, processor)


def build_mm_grounding_dino(path: Path) -> Path:
    """``MMGroundingDinoForObjectDetection`` with the Grounding DINO processor (AutoProcessor works)."""
    processor = _grounding_dino_processor()
    config = _grounding_dino_config(tfm.MMGroundingDinoConfig, len(processor.tokenizer))
    return _save(path, tfm.MMGroundingDinoForObjectDetection, config, processor)


def _owl_configs() -> dict[str, Any]:
    """Config kwargs shared by OWL-ViT and OWLv2: 16-token queries, 64 px images, 16 px patches."""
    return {
        "text_config": _clip_text(max_position_embeddings=16),
        "vision_config": {**TINY_VISION, "image_size": 64, "patch_size": 16},
        "projection_dim": 32,
    }


def build_owlvit(path: Path) -> Path:
    """``OwlViTForObjectDetection`` + ``OwlViTProcessor`` (64 px; AutoProcessor works).

    The tokenizer has ``model_max_length=16`` because the processor pads queries to ``max_length``, and a
    bos id > 0 (the model drops queries whose first id is 0, giving all logits -3.4e38).
    ``post_process_image_guided_detection`` needs ``target_sizes`` as a tensor.
    """
    image_processor = tfm.OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    processor = tfm.OwlViTProcessor(image_processor, clip_tokenizer(model_max_length=16))
    return _save(path, tfm.OwlViTForObjectDetection, tfm.OwlViTConfig(**_owl_configs()), processor)


def build_owlv2(path: Path) -> Path:
    """``Owlv2ForObjectDetection`` + ``Owlv2Processor`` (64 px; AutoProcessor works).

    Same tokenizer rules as OWL-ViT. OWLv2 pads the image to a square before resizing, so boxes are relative
    to the padded square: pass ``target_sizes=[(max(w, h), max(w, h))]`` (boxes may exceed the image edge).
    """
    processor = tfm.Owlv2Processor(
        tfm.Owlv2ImageProcessor(size={"height": 64, "width": 64}), clip_tokenizer(model_max_length=16)
    )
    return _save(path, tfm.Owlv2ForObjectDetection, tfm.Owlv2Config(**_owl_configs()), processor)


def build_omdet_turbo(path: Path) -> Path:
    """``OmDetTurboForObjectDetection`` + ``OmDetTurboProcessor`` (DETR image processor, 224 px).

    The default backbone is a timm Swin: ``use_timm_backbone=False`` with a dict HF Swin config avoids timm.
    ``pipeline("zero-shot-object-detection")`` does not support OmDet-Turbo (missing ``classes_input_ids``).
    Post-process with ``post_process_grounded_object_detection(out, text_labels=[labels], ...)``.
    """
    text = {**_clip_text(), "model_type": "clip_text_model", "hidden_size": 16, "intermediate_size": 16}
    config = tfm.OmDetTurboConfig(
        text_config=text,
        backbone_config={**TINY_SWIN, "image_size": 224},
        use_timm_backbone=False,
        apply_layernorm_after_vision_backbone=False,
        image_size=224,
        decoder_num_layers=1,
        encoder_layers=1,
        encoder_in_channels=(16, 32, 64),
        num_queries=20,
        encoder_projection_indices=[2],
        encoder_attention_heads=2,
        decoder_num_heads=2,
        decoder_num_points=4,
        num_feature_levels=3,
        encoder_dim_feedforward=32,
        task_encoder_hidden_dim=32,
        decoder_dim_feedforward=32,
        class_embed_dim=16,
        text_projection_in_dim=16,
        text_projection_out_dim=16,
        encoder_hidden_dim=8,
        decoder_hidden_dim=8,
        vision_features_channels=[8, 8, 8],
    )
    processor = tfm.OmDetTurboProcessor(
        tfm.DetrImageProcessor(size={"height": 224, "width": 224}, do_pad=False),
        clip_tokenizer(model_max_length=77),
    )
    return _save(path, tfm.OmDetTurboForObjectDetection, config, processor)


# --------------------------------------------------------------------------------------------------
# Image-text embedding models
# --------------------------------------------------------------------------------------------------


def build_clip(path: Path) -> Path:
    """``CLIPModel`` + ``CLIPProcessor`` (32 px, 77-token text; AutoProcessor and zero-shot pipeline work).

    In transformers 5.24 ``get_image_features`` / ``get_text_features`` return a ``BaseModelOutputWithPooling``
    whose ``pooler_output`` is the projected embedding (not a plain tensor, as TINY-MODELS.md says).
    """
    config = tfm.CLIPConfig(text_config=_clip_text(), vision_config=TINY_VISION, projection_dim=16)
    processor = tfm.CLIPProcessor(tfm.CLIPImageProcessor(**TINY_CLIP_IMAGE), clip_tokenizer(model_max_length=77))
    return _save(path, tfm.CLIPModel, config, processor)


def build_altclip(path: Path) -> Path:
    """``AltCLIPModel`` + ``AltCLIPProcessor`` (XLM-R unigram tokenizer; the zero-shot pipeline works).

    XLM-R positions start at ``pad_token_id + 1``, so 80 positions hold 64-token texts.
    """
    tokenizer = xlmr_tokenizer(model_max_length=64)
    text = {
        **TINY_TEXT,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 80,
        "project_dim": 32,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    config = tfm.AltCLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)
    processor = tfm.AltCLIPProcessor(tfm.CLIPImageProcessor(**TINY_CLIP_IMAGE), tokenizer)
    return _save(path, tfm.AltCLIPModel, config, processor)


def build_siglip(path: Path) -> Path:
    """``SiglipModel`` + ``SiglipProcessor`` (32 px; sentencepiece tokenizer trained into ``path``).

    Call the processor with ``padding="max_length"`` (SigLIP was trained on max-length padding). The
    zero-shot-image-classification pipeline pads to 64 tokens, so ``max_position_embeddings`` is 64.
    """
    tokenizer = siglip_tokenizer(path, model_max_length=64)
    text = {
        **TINY_TEXT,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,  # the default 49406 is outside the tiny vocab (and SigLIP has no bos)
    }
    config = tfm.SiglipConfig(text_config=text, vision_config=TINY_VISION)
    processor = tfm.SiglipProcessor(tfm.SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    return _save(path, tfm.SiglipModel, config, processor)


def build_siglip2(path: Path) -> Path:
    """``Siglip2Model`` + ``Siglip2Processor`` (NaFlex, 16 px patches, up to 256 of them; Gemma BPE tokenizer).

    ``Siglip2Processor`` class defaults (``max_num_patches=256, patch_size=16, max_length=64``) override the
    values saved with the image processor, so the tiny model keeps those sizes (a smaller saved
    ``max_num_patches`` fails with a shape mismatch unless passed at call time). Texts are padded to 64
    tokens. ``get_image_features`` needs ``pixel_attention_mask`` and ``spatial_shapes`` (both returned by
    the processor). The tokenizer reloads as ``Siglip2Tokenizer``.
    """
    tokenizer = gemma_tokenizer(model_max_length=64)
    text = {
        **TINY_TEXT,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {**TINY_TEXT, "patch_size": 16, "num_patches": 256}
    config = tfm.Siglip2Config(text_config=text, vision_config=vision)
    image_processor = tfm.Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
    return _save(path, tfm.Siglip2Model, config, tfm.Siglip2Processor(image_processor, tokenizer))


def build_blip(path: Path) -> Path:
    """``BlipForImageTextRetrieval`` + ``BlipProcessor`` (32 px; BERT tokenizer with ``[DEC]``, ``[ENC]``).

    ``model(..., use_itm_head=True)`` gives ``itm_score`` (B, 2); ``use_itm_head=False`` gives the cosine
    similarity.
    """
    tokenizer = bert_tokenizer(bos_token="[DEC]", model_max_length=64)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    text = {
        **TINY_TEXT,
        "vocab_size": len(tokenizer),
        "encoder_hidden_size": 32,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    # BlipVisionConfig's default initializer_range (1e-10) makes the tiny model ignore its image.
    vision = {**TINY_VISION, "initializer_range": 0.02}
    config = tfm.BlipConfig(text_config=text, vision_config=vision, projection_dim=16, image_text_hidden_size=16)
    processor = tfm.BlipProcessor(tfm.BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    return _save(path, tfm.BlipForImageTextRetrieval, config, processor)


def build_dinov2(path: Path) -> Path:
    """``Dinov2Model`` + ``BitImageProcessor`` (32 px, patch 8).

    With no tokenizer in the directory, ``AutoProcessor.from_pretrained`` returns the ``BitImageProcessor``.
    """
    config = tfm.Dinov2Config(**TINY_VISION)
    image_processor = tfm.BitImageProcessor(**TINY_CLIP_IMAGE)
    return _save(path, tfm.Dinov2Model, config, image_processor)


def build_dinov2_with_registers(path: Path) -> Path:
    """``Dinov2WithRegistersModel`` + ``BitImageProcessor`` (32 px, patch 8): tokens are CLS, 4 registers, 16 patches."""
    config = tfm.Dinov2WithRegistersConfig(**TINY_VISION, num_register_tokens=4)
    return _save(path, tfm.Dinov2WithRegistersModel, config, tfm.BitImageProcessor(**TINY_CLIP_IMAGE))


def build_dinov3_vit(path: Path) -> Path:
    """``DINOv3ViTModel`` + ``DINOv3ViTImageProcessor`` (resized to 32 px square, patch 8, RoPE, 4 registers)."""
    config = tfm.DINOv3ViTConfig(**TINY_VISION, num_register_tokens=4)
    image_processor = tfm.DINOv3ViTImageProcessor(size={"height": 32, "width": 32})
    return _save(path, tfm.DINOv3ViTModel, config, image_processor)


def build_dinov3_convnext(path: Path) -> Path:
    """``DINOv3ConvNextModel`` + ``DINOv3ViTImageProcessor`` (64 px square; 4 one-block stages, 8..32 channels).

    The network's stride is 32, so its last feature map is 2x2: the output is its layer-normed mean as the
    "CLS" token, then the 4 cells.
    """
    config = tfm.DINOv3ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64)
    image_processor = tfm.DINOv3ViTImageProcessor(size={"height": 64, "width": 64})
    return _save(path, tfm.DINOv3ConvNextModel, config, image_processor)


# --------------------------------------------------------------------------------------------------
# Promptable segmentation
# --------------------------------------------------------------------------------------------------


def build_sam(path: Path) -> Path:
    """``SamModel`` + ``SamProcessor`` (64 px input, 16 px low-res masks; AutoProcessor works).

    ``processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])``
    returns bool masks at the original size.
    """
    config = tfm.SamConfig(
        vision_config={
            **TINY_TEXT,
            "num_hidden_layers": 2,
            "output_channels": 32,
            "image_size": 64,
            "patch_size": 8,
            "window_size": 4,
            "global_attn_indexes": [1],
            "num_pos_feats": 16,
            "mlp_dim": 64,
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": 64,
            "patch_size": 8,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_depth": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    image_processor = tfm.SamImageProcessor(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )
    return _save(path, tfm.SamModel, config, tfm.SamProcessor(image_processor))


def build_sam2(path: Path) -> Path:
    """``Sam2Model`` + ``Sam2Processor`` (128 px Hiera; AutoProcessor works).

    Points use 4-level nesting ``[[[[x, y]]]]``. Post-process with
    ``processor.post_process_masks(out.pred_masks, inputs["original_sizes"])``.
    """
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 12,
        "image_size": 128,
        "blocks_per_stage": [1, 1, 1, 1],
        "embed_dim_per_stage": [12, 24, 48, 96],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
    }
    vision = {
        "backbone_config": backbone,
        "backbone_channel_list": [96, 48, 24, 12],
        "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
        "fpn_hidden_size": 32,
    }
    config = tfm.Sam2Config(
        vision_config=vision,
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": 128,
            "patch_size": 16,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_depth": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    image_processor = tfm.Sam2ImageProcessor(size={"height": 128, "width": 128}, mask_size={"height": 32, "width": 32})
    return _save(path, tfm.Sam2Model, config, tfm.Sam2Processor(image_processor, target_size=128))


def build_sam3(path: Path) -> Path:
    """``Sam3Model`` + ``Sam3Processor`` (text-prompted, 224 px ViT with 14 px patches; AutoProcessor works).

    The processor hard-codes 32-token text, so the CLIP text tower has 32 positions. Post-process with
    ``post_process_instance_segmentation`` / ``post_process_object_detection`` /
    ``post_process_semantic_segmentation``. ``get_vision_features`` then ``model(vision_embeds=...,
    input_ids=...)`` reuses one image embedding across prompts.
    """
    vit = {
        **TINY_TEXT,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": 224,
        "patch_size": 14,
        "window_size": 8,
        "global_attn_indexes": [0, 1],
    }
    # 224 / 14 = 16 tokens a side; scale factors 2 and 1 give 32x32 and 16x16 FPN levels.
    vision = {
        "backbone_config": {**vit, "model_type": "sam3_vit_model"},
        "fpn_hidden_size": 32,
        "scale_factors": [2.0, 1.0],
        "backbone_feature_sizes": [[32, 32], [16, 16]],
    }
    text = {**_clip_text(max_position_embeddings=32), "model_type": "clip_text_model", "projection_dim": 32}
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    config = tfm.Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 5},
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2, "num_upsampling_stages": 2},
    )
    image_processor = tfm.Sam3ImageProcessor(size={"height": 224, "width": 224}, mask_size={"height": 56, "width": 56})
    processor = tfm.Sam3Processor(image_processor, clip_tokenizer(model_max_length=32))
    return _save(path, tfm.Sam3Model, config, processor)


# --------------------------------------------------------------------------------------------------
# Generative grounding models
# --------------------------------------------------------------------------------------------------


def build_kosmos2(path: Path) -> Path:
    """``Kosmos2ForConditionalGeneration`` + ``Kosmos2Processor`` (32 px; AutoProcessor works).

    The processor adds 1035 tokens (tags + ``<patch_index_0000..1023>``), so it is built first and the text
    ``vocab_size`` is ``len(processor.tokenizer)``. ``latent_query_num`` must equal the processor's
    ``num_image_tokens`` (64). The tokenizer reloads as ``TokenizersBackend``.
    """
    processor = tfm.Kosmos2Processor(tfm.CLIPImageProcessor(**TINY_CLIP_IMAGE), xlmr_tokenizer())
    text = {
        "vocab_size": len(processor.tokenizer),
        "embed_dim": 32,
        "layers": 1,
        "ffn_dim": 37,
        "attention_heads": 2,
        "max_position_embeddings": 128,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    config = tfm.Kosmos2Config(text_config=text, vision_config=TINY_VISION, latent_query_num=64)
    return _save(path, tfm.Kosmos2ForConditionalGeneration, config, processor)


def build_llava(path: Path) -> Path:
    """``LlavaForConditionalGeneration`` + ``LlavaProcessor`` (32 px CLIP vision, 1-layer Llama).

    ``<image>`` is an added special token whose id is ``image_token_id``. With patch 8, strategy ``"default"``
    and ``num_additional_image_tokens=1`` (the CLS token) the processor expands ``<image>`` to 16 tokens. The
    chat template is ``LLAVA_CHAT_TEMPLATE``.
    """
    tokenizer = gpt2_tokenizer(pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    text = {
        **TINY_TEXT,
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = tfm.LlavaConfig(
        vision_config={**TINY_VISION, "model_type": "clip_vision_model"},
        text_config=text,
        image_token_id=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    processor = tfm.LlavaProcessor(
        tfm.CLIPImageProcessor(**TINY_CLIP_IMAGE),
        tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return _save(path, tfm.LlavaForConditionalGeneration, config, processor)


def build_florence2(path: Path) -> Path:
    """``Florence2ForConditionalGeneration`` + ``Florence2Processor`` (32 px DaViT, 1+1-layer BART).

    The tokenizer needs ``extra_special_tokens={"image_token": "<image>"}``, ``<loc_0>..<loc_999>`` and the
    outline markup ``<sep>``, ``<poly>``, ``</poly>`` (as the real tokenizer has);
    ``post_processor_config`` is required by ``post_process_generation`` (else "Unsupported parse task");
    ``image_seq_length`` must equal the vision token count (64 patches + 1 = 65 at 32 px, stride 4).
    """
    tokenizer = bart_tokenizer(extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<sep>", "<poly>", "</poly>"])
    text = {
        "model_type": "bart",
        "vocab_size": len(tokenizer),
        "d_model": 16,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "max_position_embeddings": 128,
    }
    vision = {
        "depths": [1],
        "patch_size": [7],
        "patch_stride": [4],
        "patch_padding": [3],
        "patch_prenorm": [False],
        "embed_dim": [16],
        "num_heads": [1],
        "num_groups": [1],
        "window_size": 12,
        "projection_dim": 16,
    }
    config = tfm.Florence2Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id)
    image_processor = tfm.CLIPImageProcessor(
        size={"height": 32, "width": 32}, do_center_crop=False, image_seq_length=65
    )
    processor = tfm.Florence2Processor(
        image_processor, tokenizer, post_processor_config=FLORENCE2_POST_PROCESSOR_CONFIG
    )
    return _save(path, tfm.Florence2ForConditionalGeneration, config, processor)


# Minimal Qwen2.5-VL chat template: the image placeholder the processor expands, then the text.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen2_5_vl(path: Path) -> Path:
    """``Qwen2_5_VLForConditionalGeneration`` + ``Qwen2_5_VLProcessor`` (1-block ViT, 1-layer Qwen2 text).

    The GPT-2 byte tokenizer gets Qwen's chat and vision markers as special tokens; ``<|im_end|>`` ends an answer.
    The image processor's pixel budget (56² to 112² px, multiples of 28) keeps inputs at 4 to 16 image tokens.
    ``mrope_section`` must sum to half the text head size (16 / 2 = 8).
    """
    tokenizer = gpt2_tokenizer(pad_token="<|endoftext|>")
    markers = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": markers})
    ids = dict(zip(markers, tokenizer.convert_tokens_to_ids(markers), strict=True))
    text = {
        **TINY_TEXT,
        "model_type": "qwen2_5_vl_text",
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": ids["<|im_end|>"],
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_heads": 2,
        "out_hidden_size": 32,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [0],
    }
    config = tfm.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    processor = tfm.Qwen2_5_VLProcessor(
        image_processor=tfm.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=tfm.Qwen2VLVideoProcessor(),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return _save(path, tfm.Qwen2_5_VLForConditionalGeneration, config, processor)


# --------------------------------------------------------------------------------------------------
# Non-transformers families
# --------------------------------------------------------------------------------------------------


def build_open_clip(path: Path) -> tuple[str, Path]:
    """Register a tiny open_clip ViT config and save random weights; return ``(model_name, checkpoint)``.

    Writes ``path/model_configs/<model_name>.json`` and registers it with the public
    ``open_clip.add_model_config(folder)`` (process-local: a test process that did not call this builder must
    call ``open_clip.add_model_config(path / "model_configs")`` itself). The checkpoint is
    ``path/open_clip_model.safetensors`` (a raw state dict). A test loads it with::

        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint))
        tokenizer = open_clip.get_tokenizer(model_name)  # the shipped BPE vocab, works offline

    ``path/open_clip_config.json`` is written too, so ``create_model_and_transforms(f"local-dir:{path}")``
    loads the same model without registration. The 49408-token vocab (needed by the shipped tokenizer) makes
    the token embedding most of the 1.6 M parameters; images are 32 px, texts 16 tokens.
    """
    import open_clip
    from safetensors.torch import save_file

    model_cfg: dict[str, Any] = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    config_dir = path / "model_configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{OPEN_CLIP_MODEL_NAME}.json").write_text(json.dumps(model_cfg, indent=2))
    open_clip.add_model_config(config_dir)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))

    torch.manual_seed(SEED)
    model = open_clip.create_model(OPEN_CLIP_MODEL_NAME, pretrained=None)
    checkpoint = path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return OPEN_CLIP_MODEL_NAME, checkpoint


def build_fastvit(path: Path) -> Path:
    """Save random real-size timm ``fastvit_t8`` weights (4.0 M params) to ``path/fastvit_t8.safetensors``.

    timm has no smaller registered FastViT, and shrunken kwargs would have to be repeated by the loader, so
    the real architecture is kept (build 0.3 s, about 0.1 s per 256 px image on CPU). Load with::

        timm.create_model("fastvit_t8", pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)})

    which keeps the real ``pretrained_cfg`` (256 px, bicubic, crop_pct 0.9) but reads weights from the file.
    """
    import timm
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = timm.create_model(FASTVIT_NAME, pretrained=False)
    checkpoint = path / f"{FASTVIT_NAME}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return checkpoint


def segment_anything_tiny_kwargs() -> dict[str, Any]:
    """Constructor args of the tiny ``segment_anything`` Sam saved by ``build_segment_anything``.

    The package's ``sam_model_registry`` only builds vit_b/l/h (its private ``_build_sam`` takes the first
    four keys and hard-codes the rest at ViT-B/1024 px values), so a loader for tiny weights must build the
    model from these args, e.g. with ``tiny_segment_anything_model(**kwargs)``, then ``load_state_dict``.
    """
    return {
        "encoder_embed_dim": 32,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1],
        "prompt_embed_dim": 32,
        "image_size": 256,
        "vit_patch_size": 16,
        "window_size": 4,
        "mask_in_chans": 4,
        "decoder_mlp_dim": 64,
        "decoder_num_heads": 2,
        "iou_head_depth": 2,
        "iou_head_hidden_dim": 32,
    }


def tiny_segment_anything_model(checkpoint: str | Path | None = None, **sizes: Any) -> Any:
    """A tiny ``segment_anything`` ``Sam``: the adapter's builder with ``segment_anything_tiny_kwargs()``.

    ``sizes`` override single sizes; ``checkpoint`` (a state dict) is loaded when given. Returns the model in eval mode.
    """
    from model_adapters.sam import build_original_sam

    sam = build_original_sam(**{**segment_anything_tiny_kwargs(), **sizes}).eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam


def build_segment_anything(path: Path) -> Path:
    """Save a tiny random ``segment_anything`` Sam (256 px, 110 k params) to ``path/sam_tiny.pth``.

    Its builder sizes go beside it in ``sam_tiny.json``, which is how the ``segment_anything`` adapter loads
    non-standard sizes. Reload by hand with ``tiny_segment_anything_model(checkpoint,
    **segment_anything_tiny_kwargs())``; ``SamPredictor.set_image`` / ``predict`` then take a few ms.
    """
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = tiny_segment_anything_model(**segment_anything_tiny_kwargs())
    checkpoint = path / "sam_tiny.pth"
    torch.save(model.state_dict(), checkpoint)
    checkpoint.with_suffix(".json").write_text(json.dumps(segment_anything_tiny_kwargs()))
    return checkpoint


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

ALBEF_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "albef"


def build_albef(path: Path, checkpoint: str = "albef_tiny_retrieval96.pth") -> Path:
    """A tiny ALBEF checkpoint (official layout, from the fixtures) with its vocab and BERT config beside it.

    Returns the ``.pth`` path, which is the ``model_id`` of the ``albef`` adapter.
    """
    path.mkdir(parents=True, exist_ok=True)
    for name in (checkpoint, "vocab.txt", "config_bert_small.json"):
        shutil.copy(ALBEF_FIXTURES / name, path / name)
    return path / checkpoint


DETIC_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "detic"


def build_detic(path: Path) -> Path:
    """The tiny Detic checkpoint of the fixtures (made with the original code) and a tiny CLIP text encoder with a
    32-d projection (the tiny classifier's width) in ``clip-vit-base-patch32/`` beside it, as for offline use.

    Returns the ``.pth`` path, which is the ``model_id`` of the ``detic`` and ``codet`` adapters.
    """
    config = tfm.CLIPConfig(text_config=_clip_text(), vision_config=TINY_VISION, projection_dim=32)
    processor = tfm.CLIPProcessor(tfm.CLIPImageProcessor(**TINY_CLIP_IMAGE), clip_tokenizer(model_max_length=77))
    _save(path / "clip-vit-base-patch32", tfm.CLIPModel, config, processor)
    shutil.copy(DETIC_FIXTURES / "tiny_detic_swinb.pth", path / "tiny_detic_swinb.pth")
    return path / "tiny_detic_swinb.pth"


def build_vlpart(path: Path) -> Path:
    """The tiny VLPart R50 checkpoint of the fixtures (made with the original code) and a tiny open_clip model with
    a 32-d text projection (the tiny classifier's width) in ``clip-rn50/`` beside it, as for offline use.

    Returns the ``.pth`` path, which is the ``model_id`` of the ``vlpart`` adapter.
    """
    build_open_clip(path / "clip-rn50")
    shutil.copy(DETIC_FIXTURES / "tiny_vlpart_r50.pth", path / "tiny_vlpart_r50.pth")
    return path / "tiny_vlpart_r50.pth"


def build_open_clip_dir(path: Path) -> Path:
    """``build_open_clip`` as a folder ``model_id`` for the ``openclip`` adapter (config + weights inside)."""
    build_open_clip(path)
    return path


def build_fastvit_dir(path: Path) -> Path:
    """Random ``fastvit_t8`` saved the way ``hf download timm/...`` lays it out (``config.json`` + weights)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(SEED)
    save_for_hf(timm.create_model(FASTVIT_NAME, pretrained=False), path)
    return path


TINY_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "albef": build_albef,
    "detic": build_detic,
    "vlpart": build_vlpart,
    "codet": build_detic,  # the same network; CoDet checkpoints differ only by training-only keys
    "openclip": build_open_clip_dir,
    "fastvit": build_fastvit_dir,
    "segment_anything": build_segment_anything,
    "grounding_dino": build_grounding_dino,
    "mm_grounding_dino": build_mm_grounding_dino,
    "owlvit": build_owlvit,
    "owlv2": build_owlv2,
    "omdet_turbo": build_omdet_turbo,
    "clip": build_clip,
    "altclip": build_altclip,
    "siglip": build_siglip,
    "siglip2": build_siglip2,
    "blip": build_blip,
    "dinov2": build_dinov2,
    "dinov2_with_registers": build_dinov2_with_registers,
    "dinov3_vit": build_dinov3_vit,
    "dinov3_convnext": build_dinov3_convnext,
    "sam": build_sam,
    "sam2": build_sam2,
    "sam3": build_sam3,
    "kosmos2": build_kosmos2,
    "llava": build_llava,
    "florence2": build_florence2,
    "florence2_seg": build_florence2,  # the same checkpoint serves both Florence-2 adapters
    "qwen2_5_vl": build_qwen2_5_vl,
}
