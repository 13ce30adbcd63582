"""Shared benchmark helpers: real-size random-weight models, timing, and the results table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@dataclass(frozen=True)
class Row:
    """One line of the table: what was measured, baseline and prelabel (seconds unless ``unit`` says), their ratio."""

    id: str
    what: str
    baseline_s: float
    prelabel_s: float
    ratio: float
    target: str
    unit: str = "s"

    def cells(self) -> list[str]:
        digits = 4 if self.unit == "s" else 3
        return [
            self.id,
            self.what,
            f"{self.baseline_s:.{digits}f} {self.unit}",
            f"{self.prelabel_s:.{digits}f} {self.unit}",
            f"{self.ratio:.3f}",
            self.target,
        ]


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_medians(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, alternating calls so machine noise hits both alike."""
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((a, times_a), (b, times_b)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(times_a), statistics.median(times_b)


def bert_vocab_tokenizer(size: int = 30522) -> Any:
    """A BertTokenizer with bert-base's vocabulary size (synthetic entries: the hub is unreachable)."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
    words += [
        "a",
        "an",
        "the",
        "of",
        "photo",
        "cat",
        "dog",
        "person",
        "car",
        "truck",
        "remote",
        "bird",
        "tree",
        "house",
        "bus",
        "bicycle",
        "chair",
        "table",
    ]
    words += list("abcdefghijklmnopqrstuvwxyz0123456789") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = dict.fromkeys(words)
    vocab.update(dict.fromkeys(f"[unused{i}]" for i in range(size - len(vocab))))
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=256)


def real_size_grounding_dino(directory: Path) -> Path:
    """Grounding DINO-T at full size (Swin-T + BERT-base, 900 queries) with random weights, saved once."""
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    torch.manual_seed(0)
    GroundingDinoForObjectDetection(GroundingDinoConfig()).save_pretrained(directory)
    GroundingDinoProcessor(GroundingDinoImageProcessor(), bert_vocab_tokenizer()).save_pretrained(directory)
    return directory


def cache_dir() -> Path:
    """Where benchmark models are kept between runs (``PRELABEL_BENCH_CACHE``, default ``.cache/bench``)."""
    path = Path(os.environ.get("PRELABEL_BENCH_CACHE", ".cache/bench")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def clip_vocab_tokenizer(size: int = 49408, max_length: int = 16) -> Any:
    """A CLIPTokenizer with CLIP's vocabulary size (synthetic entries); specials last, so bos/eos are 49406/49407."""
    from transformers import CLIPTokenizer

    symbols = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
    symbols += [chr(256 + n) for n in range(256 - len(symbols))]
    vocab = dict.fromkeys(symbols + [s + "</w>" for s in symbols])
    vocab.update(dict.fromkeys(f"filler{i}</w>" for i in range(size - 2 - len(vocab))))
    vocab.update(dict.fromkeys(["<|startoftext|>", "<|endoftext|>"]))
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=max_length)


def real_size_owlv2(directory: Path) -> Path:
    """OWLv2 B/16 at 960 px (the base ensemble checkpoint's layout) with random weights, saved once."""
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(0)
    text = {"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0}
    config = Owlv2Config(text_config=text, vision_config={"image_size": 960, "patch_size": 16})
    Owlv2ForObjectDetection(config).save_pretrained(directory)
    processor = Owlv2ImageProcessor(size={"height": 960, "width": 960})
    Owlv2Processor(processor, clip_vocab_tokenizer()).save_pretrained(directory)
    return directory


def real_size_clip(directory: Path) -> Path:
    """CLIP ViT-B/32 at full size (224 px, 77-token texts) with random weights, saved once."""
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407})
    CLIPModel(config).save_pretrained(directory)
    CLIPProcessor(CLIPImageProcessor(), clip_vocab_tokenizer(max_length=77)).save_pretrained(directory)
    return directory


def real_size_dinov2_small(directory: Path) -> Path:
    """DINOv2 ViT-S/14 at full size (224 px crops) with random weights, saved once."""
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=518)
    Dinov2Model(config).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}).save_pretrained(directory)
    return directory


def real_size_florence2_base(directory: Path) -> Path:
    """Florence-2-base at full size (DaViT at 768 px, 577 image tokens; BART 6+6 layers, d 768) with random weights.

    The tokenizer is byte-level BART with filler entries up to the real vocabulary (50,265), plus the location and
    outline tokens; the model's vocabulary is the checkpoint's 51,289 rows.
    """
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    from tests.tiny_models import FLORENCE2_POST_PROCESSOR_CONFIG, bytes_to_unicode

    vocab = dict.fromkeys(["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode()])
    vocab.update(dict.fromkeys(f"filler{i}" for i in range(50265 - 1 - len(vocab))))
    vocab["<mask>"] = None
    tokenizer = BartTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, merges=[], extra_special_tokens={"image_token": "<image>"}
    )
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<sep>", "<poly>", "</poly>"])
    text = {
        "model_type": "bart",
        "vocab_size": 51289,
        "d_model": 768,
        "encoder_layers": 6,
        "decoder_layers": 6,
        "encoder_attention_heads": 12,
        "decoder_attention_heads": 12,
        "encoder_ffn_dim": 3072,
        "decoder_ffn_dim": 3072,
        "max_position_embeddings": 1024,
    }
    config = Florence2Config(
        text_config=text, vision_config={"projection_dim": 768}, image_token_id=tokenizer.image_token_id
    )
    torch.manual_seed(0)
    Florence2ForConditionalGeneration(config).save_pretrained(directory)
    image_processor = CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False, image_seq_length=577)
    processor = Florence2Processor(image_processor, tokenizer, post_processor_config=FLORENCE2_POST_PROCESSOR_CONFIG)
    processor.save_pretrained(directory)
    return directory


def real_size_kosmos2(directory: Path) -> Path:
    """Kosmos-2 patch14-224 at full size (CLIP ViT-L/14 at 224 px; 24-layer, 2048-wide decoder) with random weights.

    The XLM-R tokenizer has filler pieces up to the real 64,002; the processor adds its 1035 grounding tokens, so
    the vocabulary is the checkpoint's 65,037.
    """
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        XLMRobertaTokenizer,
    )

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in ("an", "image", "of", "a", "the", "car", "person", "bicycle")]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,"]
    pieces += [(f"▁filler{i}", -5.0) for i in range(64001 - len(pieces))] + [("<mask>", 0.0)]
    processor = Kosmos2Processor(CLIPImageProcessor(), XLMRobertaTokenizer(vocab=pieces))
    config = Kosmos2Config(text_config={"vocab_size": len(processor.tokenizer)}, latent_query_num=64)
    torch.manual_seed(0)
    Kosmos2ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
