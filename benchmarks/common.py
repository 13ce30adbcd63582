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
