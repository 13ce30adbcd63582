"""ALBEF zero-shot classification from the official checkpoints, on the ``albef_net`` port.

load -> preprocess -> _forward -> postprocess (``ContrastiveClassifier``): images embedded in batches, prompts
once per prompt set, probabilities by softmax over ``cosine / temp`` (ITC), as ALBEF ranks texts. With
``itm_top_k`` the image-text matching head re-ranks the best prompts, as ALBEF's retrieval evaluation does.

``model_id`` is the checkpoint: a local ``.pth`` path or an http(s) URL, downloaded once into
``albef_cache_dir()`` (``$HF_HOME/prelabel/albef``, else ``~/.cache/prelabel/albef``; one sub-folder per URL;
with ``HF_HUB_OFFLINE`` set, only an already downloaded URL loads). The ``bert-base-uncased`` vocabulary is the
``vocab.txt`` beside the checkpoint file (put it there for offline use), else bert-base-uncased's from the
Hugging Face hub cache; its size must equal the checkpoint's word embeddings.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import numpy as np
import supervision as sv

from model_adapters.base import AdapterLoadError, Query, ResizeRule, SettingsError
from model_adapters.classification import (
    ClassifierParams,
    ContrastiveClassifier,
    apply_templates,
    classification_detections,
)
from model_adapters.registry import register_adapter
from model_adapters.torch_utils import download_file, missing_path, resolve_device, resolve_dtype

__all__ = ["Albef", "AlbefParams", "albef_cache_dir", "itm_rerank", "pre_caption"]

# The download links of the official README (github.com/salesforce/ALBEF, "Download").
_RELEASES = "https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/"
VOCAB_FILE = "vocab.txt"
DEFAULT_VOCAB = "bert-base-uncased"
_ITM_CHUNK = 128  # image-text pairs per ITM pass, to bound memory with many templates
_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")


@dataclass(frozen=True)
class AlbefParams(ClassifierParams):
    """Per-request knobs of ALBEF.

    Attributes:
        templates: As for every zero-shot classifier; ALBEF's caption cleaning drops their punctuation.
        itm_top_k: Re-rank each image's ``k`` most probable prompts (by ITC) with the ITM head; 0 or 1 is off.
            The ITC probability mass of those ``k`` prompts is shared among them by a softmax of their ITM
            "match" logits; the other prompts keep their ITC probability (see ``itm_rerank``).
    """

    itm_top_k: int = 0

    def __post_init__(self) -> None:
        """Refuse a negative ``itm_top_k``."""
        if self.itm_top_k < 0:
            raise SettingsError(f"albef.itm_top_k must be >= 0 (0 turns ITM re-ranking off), got {self.itm_top_k}")


def pre_caption(text: str) -> str:
    """ALBEF's caption cleaning (``pre_caption``): lowercase, drop ``,.'!?"()*#:;~``, ``-`` and ``/`` to spaces.

    Every caption ALBEF was fine-tuned and evaluated on went through it, so prompts do too.
    """
    text = _PUNCTUATION.sub("", text.lower()).replace("-", " ").replace("/", " ")
    return " ".join(text.split())


def itm_rerank(probs: Any, index: Any, match_logits: Any) -> Any:
    """Share the ITC probability of each image's top-k prompts by a softmax of their ITM match logits.

    Within the top-k, the order is ALBEF's retrieval order (ITM match logit, ``itm_head(...)[:, 1]``); the other
    prompts keep their ITC probability, and the rows still sum to one. The best prompt is always one of the
    top-k, since their shared mass is at least ``k`` times any other prompt's probability.

    Args:
        probs: ITC softmax probabilities ``(B, N)``.
        index: Indices of the top-k prompts by ITC ``(B, k)``.
        match_logits: ITM match logits of those prompts ``(B, k)``.

    Returns:
        Probabilities ``(B, N)``.
    """
    mass = probs.gather(1, index).sum(dim=1, keepdim=True)
    return probs.scatter(1, index, mass * match_logits.softmax(dim=-1))


def albef_cache_dir() -> Path:
    """Where checkpoints given by URL are downloaded: ``$HF_HOME/prelabel/albef``, else ``~/.cache/prelabel/albef``."""
    home = os.environ.get("HF_HOME")
    return Path(home) / "prelabel" / "albef" if home else Path.home() / ".cache" / "prelabel" / "albef"


def _is_url(model_id: str) -> bool:
    return model_id.startswith(("http://", "https://"))


def _cached_path(url: str) -> Path:
    """The file a URL downloads to; the per-URL folder keeps two ``checkpoint_best.pth`` apart."""
    folder = albef_cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]
    return folder / (os.path.basename(urlparse(url).path) or "checkpoint.pth")


def _vocab_file(folder: Path) -> Path:
    """``vocab.txt`` in ``folder``, else bert-base-uncased's from the hub cache (downloaded unless offline).

    The file is resolved here rather than by ``BertTokenizer.from_pretrained``, which in transformers 5 returns a
    5-token tokenizer, without an error, for a hub id it cannot find offline.
    """
    if (folder / VOCAB_FILE).is_file():
        return folder / VOCAB_FILE
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(DEFAULT_VOCAB, VOCAB_FILE))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@register_adapter
class Albef(ContrastiveClassifier):
    """ALBEF (ViT-B/16 + BERT, ITC and ITM heads) from its ``.pth`` checkpoints: path or URL as ``model_id``."""

    name = "albef"
    variants: Mapping[str, str] = {
        "mscoco": _RELEASES + "mscoco.pth",  # retrieval fine-tune, 384 px
        "flickr30k": _RELEASES + "flickr30k.pth",  # retrieval fine-tune, 384 px
        "pretrain_14m": _RELEASES + "ALBEF.pth",  # pre-training on 14M images, 256 px
        "pretrain_4m": _RELEASES + "ALBEF_4M.pth",  # pre-training on 4M images, 256 px
    }
    # The COCO retrieval fine-tune: zero-shot classification is image-to-text retrieval over the prompts, the job
    # its ITC/ITM heads were fine-tuned for (at 384 px, on COCO's broad everyday-object captions).
    default_variant = "mscoco"
    Params: ClassVar[type] = AlbefParams
    max_batch_size = 8

    def load(self) -> None:
        """Load the checkpoint (downloading a URL once) and the vocabulary beside it or from the hub."""
        from model_adapters.albef_net import AlbefCheckpointError, AlbefTokenizer, load_albef

        self.device = resolve_device(self.spec.device)
        self.dtype = resolve_dtype(self.spec.dtype, self.device)
        local = self._local_checkpoint()
        try:
            if not local.is_file():  # a URL not downloaded yet
                download_file(self.spec.model_id, local)
            model = load_albef(local)
        except AlbefCheckpointError as exc:
            raise AdapterLoadError(
                f"albef: {exc}. model_id must be an official ALBEF checkpoint (ALBEF.pth, ALBEF_4M.pth, mscoco.pth, "
                "flickr30k.pth) or a fine-tune in their layout"
            ) from exc
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise AdapterLoadError(f"albef: could not read the checkpoint {self.spec.model_id!r}: {reason}") from exc
        try:
            vocab = _vocab_file(local.parent)
            words = len(vocab.read_text(encoding="utf-8").splitlines())
            self.tokenizer = AlbefTokenizer(vocab)
        except (OSError, ValueError) as exc:
            raise AdapterLoadError(
                f"albef: could not load the {DEFAULT_VOCAB} vocabulary ({' '.join(str(exc).split())}); put its "
                f"{VOCAB_FILE} next to the checkpoint ({local.parent})"
            ) from exc
        if words != model.text_encoder.config.vocab_size:
            raise AdapterLoadError(
                f"albef: {vocab} has {words} tokens but the checkpoint's text encoder "
                f"{model.text_encoder.config.vocab_size}; use the vocabulary it was trained with ({DEFAULT_VOCAB})"
            )
        self.model = model.to(self.device, self.dtype).eval()
        self.resize_rule = ResizeRule(shortest=self.model.image_res)  # a square resize: no detail beyond its side

    def _local_checkpoint(self) -> Path:
        """The checkpoint's file: the path given, or where its URL is (or will be) downloaded."""
        model_id = self.spec.model_id
        if not _is_url(model_id):
            path = Path(model_id).expanduser()
            instead = f"an http(s) URL such as {self.variants[self.default_variant]!r}"
            if not path.exists():
                raise missing_path("albef", path, "file", instead)
            if not path.is_file():
                raise AdapterLoadError(
                    f"albef: checkpoint {model_id!r} is not a file; model_id must be an ALBEF .pth path or {instead}"
                )
            return path
        cached = _cached_path(model_id)
        if not cached.is_file() and _offline():
            raise AdapterLoadError(
                f"albef: {model_id} is not downloaded yet and HF_HUB_OFFLINE is set; download it once and set "
                f"\"model_id\" to the file's path (with bert-base-uncased's {VOCAB_FILE} beside it)"
            )
        return cached

    def preprocess_images(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """ALBEF's evaluation transform: bicubic resize to the checkpoint's square resolution, CLIP mean/std."""
        from PIL import Image

        from model_adapters.albef_net import preprocess_images

        pil = [Image.fromarray(np.ascontiguousarray(image)) for image in images]
        return {"pixel_values": preprocess_images(pil, self.model.image_res)}

    def preprocess(self, images: Sequence[np.ndarray], query: Query[AlbefParams]) -> dict[str, Any]:
        """Image tensors; prompts, templates and ``itm_top_k`` pass through to ``_forward``."""
        return {**super().preprocess(images, query), "itm_top_k": query.params.itm_top_k}

    def encode_images(self, batch: Mapping[str, Any]) -> Any:
        """Projected, L2-normalised image CLS embeddings ``(B, E)``."""
        return self.model.encode_image(batch["pixel_values"])[1]

    def encode_texts(self, texts: list[str]) -> Any:
        """Projected, L2-normalised text CLS embeddings ``(T, E)`` of the cleaned texts (text-only layers)."""
        ids, mask = self.tokenizer([pre_caption(text) for text in texts])
        return self.model.encode_text(ids.to(self.device), mask.to(self.device))[1]

    def logit_scale(self) -> Any:
        """ALBEF's learned temperature, inverted."""
        return 1.0 / self.model.temp

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """ITC logits ``(B, N)``; with ``itm_top_k`` >= 2 also the top-k ``itm_index`` and ``itm_logits``."""
        image_embeds, image_feat = self.model.encode_image(batch["pixel_values"])
        prompts, templates = batch["prompts"], batch["templates"]
        logits = image_feat @ self.prompt_embeddings(prompts, templates).T * self.logit_scale()
        raw = {"logits": logits}
        k = min(int(batch.get("itm_top_k", 0)), len(prompts))
        if k > 1:
            index = logits.topk(k, dim=-1).indices
            raw.update(itm_index=index, itm_logits=self._match_logits(image_embeds, index, prompts, templates))
        return raw

    def _match_logits(self, image_embeds: Any, index: Any, prompts: Sequence[str], templates: Sequence[str]) -> Any:
        """ITM match logit of each image with each of its indexed prompts, averaged over templates: ``(B, k)``."""
        import torch

        n_templates = len(templates)
        texts = [pre_caption(text) for prompt in prompts for text in apply_templates(prompt, templates)]
        ids, mask = (t.to(self.device) for t in self.tokenizer(texts))
        offsets = torch.arange(n_templates, device=index.device)
        rows = (index[..., None] * n_templates + offsets).reshape(-1)  # (B*k*T,) text rows
        images = torch.arange(index.shape[0], device=index.device).repeat_interleave(rows.numel() // index.shape[0])
        scores = []
        for start in range(0, rows.numel(), _ITM_CHUNK):
            text_rows, image_rows = rows[start : start + _ITM_CHUNK], images[start : start + _ITM_CHUNK]
            length = int(mask[text_rows].sum(dim=1).max())
            logits = self.model.itm_logits(image_embeds[image_rows], ids[text_rows, :length], mask[text_rows, :length])
            scores.append(logits[:, 1])
        return torch.cat(scores).reshape(*index.shape, n_templates).mean(dim=-1)

    def postprocess(
        self, raw: Mapping[str, Any], images: Sequence[np.ndarray], query: Query[AlbefParams]
    ) -> list[sv.Detections]:
        """ITC softmax over the prompts, ITM re-ranked within the top-k when asked; one ``Detections`` per image."""
        probs = raw["logits"].float().softmax(dim=-1)
        if "itm_logits" in raw:
            probs = itm_rerank(probs, raw["itm_index"], raw["itm_logits"].float())
        return [
            classification_detections(p, image, query.prompts, "softmax")
            for p, image in zip(probs.cpu().numpy(), images, strict=True)
        ]
