"""Each adapter family's answer computed the library's own way, for comparing adapters against.

A reference takes the loaded adapter (for its weights, never its code path) and one ``(H, W, 3)`` image, and runs
the family's reference path: the transformers processor called with an explicit channels-last layout, the model's
full forward and the processor's post-processing; or, for families that take PIL images, their own transform on
the PIL image. It answers ``sv.Detections`` in pixels of the image with ``class_id`` indexing ``PROMPTS`` (``None``
where the post-processing does not say which prompt a box belongs to), at threshold 0. Segmenters are asked for
one mask on ``SEGMENT_BOX`` of the image.

Families that are not zero-shot (``zero_shot = False``: they answer only through a learned head) have an embedding
reference in ``EMBEDDINGS`` instead: the ``(1, D)`` features of the image, computed the library's way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import supervision as sv
import torch
from PIL import Image
from transformers import AutoProcessor

PROMPTS = ("tabby", "remote control")  # words every tiny tokenizer can spell; ImageNet-1k classes for FastViT
IMAGENET_CLASSES = (281, 761)  # "tabby, tabby cat", "remote control, remote"
TEMPLATE = "a photo of a {}."  # ClassifierParams' default template
LAYOUT = {"input_data_format": "channels_last"}


def canonical(detections: sv.Detections) -> sv.Detections:
    """Detections in a fixed order, best first: by score (to 5 decimals, so ties sort alike), then by box."""
    xyxy = detections.xyxy
    return detections[np.lexsort((*xyxy.T[::-1], -np.round(detections.confidence, 5)))]


def segment_box(image: np.ndarray) -> list[float]:
    """The prompt box segmenters are given: the image less a quarter on each side (at least the whole pixel grid)."""
    height, width = image.shape[:2]
    return [width / 4, height / 4, width * 3 / 4, height * 3 / 4]


def _processor(adapter: Any) -> Any:
    return AutoProcessor.from_pretrained(adapter.spec.model_id)


def _clipped(boxes: torch.Tensor, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return np.clip(boxes.float().numpy().reshape(-1, 4), 0, [width, height, width, height])


def _boxes(result: dict[str, Any], image: np.ndarray, labels: bool = True) -> sv.Detections:
    return sv.Detections(
        xyxy=_clipped(result["boxes"], image),
        confidence=result["scores"].float().numpy(),
        class_id=result["labels"].numpy().astype(int) if labels else None,
    )


def _choices(probabilities: torch.Tensor, image: np.ndarray) -> sv.Detections:
    height, width = image.shape[:2]
    return sv.Detections(
        xyxy=np.tile(np.asarray([0, 0, width, height], dtype=np.float32), (len(PROMPTS), 1)),
        confidence=probabilities.float().numpy().reshape(len(PROMPTS)),
        class_id=np.arange(len(PROMPTS)),
    )


def _mask(masks: np.ndarray, scores: Any) -> sv.Detections:
    masks = np.asarray(masks, dtype=bool).reshape(-1, *masks.shape[-2:])
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=np.asarray(scores, dtype=np.float32).reshape(len(masks)),
        class_id=np.zeros(len(masks), dtype=int),
    )


@torch.inference_mode()
def grounding_dino(adapter: Any, image: np.ndarray) -> sv.Detections:
    processor = _processor(adapter)
    inputs = processor(images=image, text=[list(PROMPTS)], return_tensors="pt", **LAYOUT)
    outputs = adapter.model(**inputs)
    (result,) = processor.post_process_grounded_object_detection(
        outputs, inputs.input_ids, threshold=0.0, text_threshold=0.0, target_sizes=[image.shape[:2]]
    )
    return _boxes(result, image, labels=False)


@torch.inference_mode()
def owl(adapter: Any, image: np.ndarray) -> sv.Detections:
    """OWLv2's boxes are relative to the image padded to a square, so they scale by its longer side."""
    processor = _processor(adapter)
    inputs = processor(text=[list(PROMPTS)], images=image, return_tensors="pt", **LAYOUT)
    outputs = adapter.model(**inputs)
    side = max(image.shape[:2])
    size = (side, side) if adapter.name == "owlv2" else image.shape[:2]
    (result,) = processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[size], text_labels=[list(PROMPTS)]
    )
    return _boxes(result, image)


@torch.inference_mode()
def owl_text_and_example_logits(
    model: Any, model_dir: str, target: np.ndarray, texts: Sequence[str], example: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, texts + 1)`` logits on ``target`` and the boxes ``(boxes, 4)``, relative xyxy (OWLv2: of the
    square ``target`` is padded to).

    The logits are the processor's text queries, then HF's image-guided query.

    The image-guided query is the class embedding of the example image's predicted box that best matches the whole
    example image (OWLv2: the square it is padded to). OWLv2's own ``image_guided_detection`` takes the example's
    most object-like box instead, whatever the box asked for, so for OWLv2 its steps run with OWL-ViT's
    box-matching ``embed_image_query`` on OWLv2's weights.
    """
    from transformers import OwlViTForObjectDetection
    from transformers.image_transforms import center_to_corners_format

    processor = AutoProcessor.from_pretrained(model_dir)
    text = processor(text=[list(texts)], images=target, return_tensors="pt", **LAYOUT)
    guided = processor(images=target, query_images=example, return_tensors="pt", **LAYOUT)
    text_outputs = model(**text)
    text_logits = text_outputs.logits[0]
    if isinstance(model, OwlViTForObjectDetection):
        guided_logits = model.image_guided_detection(**guided).logits[0]
    else:
        query_map = model.image_embedder(pixel_values=guided["query_pixel_values"])[0]
        target_map = model.image_embedder(pixel_values=guided["pixel_values"])[0]
        query_feats, target_feats = (m.reshape(1, -1, m.shape[-1]) for m in (query_map, target_map))
        query_embeds, _, _ = OwlViTForObjectDetection.embed_image_query(model, query_feats, query_map)
        guided_logits = model.class_predictor(image_feats=target_feats, query_embeds=query_embeds)[0][0]
    boxes = center_to_corners_format(text_outputs.pred_boxes[0])
    return torch.cat([text_logits, guided_logits[:, :1]], dim=-1).numpy(), boxes.numpy()


@torch.inference_mode()
def omdet_turbo(adapter: Any, image: np.ndarray) -> sv.Detections:
    processor = _processor(adapter)
    inputs = processor(images=image, text=[list(PROMPTS)], return_tensors="pt", **LAYOUT)
    outputs = adapter.model(**inputs)
    (result,) = processor.post_process_grounded_object_detection(
        outputs, text_labels=[list(PROMPTS)], threshold=0.0, nms_threshold=1.0, target_sizes=[image.shape[:2]]
    )
    return _boxes(result, image)


@torch.inference_mode()
def clip(adapter: Any, image: np.ndarray) -> sv.Detections:
    """CLIP and AltCLIP: ``logits_per_image`` of the full model, softmax over the prompts."""
    texts = [TEMPLATE.format(p) for p in PROMPTS]
    inputs = _processor(adapter)(text=texts, images=image, padding=True, return_tensors="pt", **LAYOUT)
    return _choices(adapter.model(**inputs).logits_per_image[0].softmax(-1), image)


@torch.inference_mode()
def siglip(adapter: Any, image: np.ndarray) -> sv.Detections:
    """SigLIP and SigLIP 2: texts padded to the text tower's length, each prompt's sigmoid on its own."""
    texts = [TEMPLATE.format(p) for p in PROMPTS]
    length = adapter.model.config.text_config.max_position_embeddings
    inputs = _processor(adapter)(
        text=texts, images=image, padding="max_length", max_length=length, return_tensors="pt", **LAYOUT
    )
    return _choices(adapter.model(**inputs).logits_per_image[0].sigmoid(), image)


@torch.inference_mode()
def blip(adapter: Any, image: np.ndarray) -> sv.Detections:
    """BLIP's ITC head: the model's cosine (``use_itm_head=False``) over BLIP's initial temperature 0.07."""
    texts = [TEMPLATE.format(p) for p in PROMPTS]
    inputs = _processor(adapter)(images=[image] * len(texts), text=texts, padding=True, return_tensors="pt", **LAYOUT)
    cosine = adapter.model(**inputs, use_itm_head=False).itm_score[0]
    return _choices((cosine / 0.07).softmax(-1), image)


@torch.inference_mode()
def openclip(adapter: Any, image: np.ndarray) -> sv.Detections:
    """open_clip's own model, eval transform (on the PIL image) and tokenizer for the folder."""
    import open_clip

    model_id = f"local-dir:{adapter.spec.model_id}"
    model, transform = open_clip.create_model_from_pretrained(model_id)
    features = model.encode_image(transform(Image.fromarray(image))[None], normalize=True)
    texts = model.encode_text(open_clip.get_tokenizer(model_id)([TEMPLATE.format(p) for p in PROMPTS]), normalize=True)
    return _choices((model.logit_scale.exp() * features @ texts.T)[0].softmax(-1), image)


@torch.inference_mode()
def fastvit(adapter: Any, image: np.ndarray) -> sv.Detections:
    """timm's model and eval transform (on the PIL image): the softmax of the classes the prompts name."""
    import timm

    model = timm.create_model(f"local-dir:{adapter.spec.model_id}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    probabilities = model(transform(Image.fromarray(image))[None]).softmax(-1)[0]
    return _choices(probabilities[list(IMAGENET_CLASSES)], image)


@torch.inference_mode()
def albef(adapter: Any, image: np.ndarray) -> sv.Detections:
    """ALBEF's evaluation transform (bicubic resize to the square resolution, CLIP mean/std) on the PIL image."""
    from torchvision import transforms

    normalize = transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    resolution = adapter.model.image_res
    transform = transforms.Compose(
        [
            transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            normalize,
        ]
    )
    _, features = adapter.model.encode_image(transform(Image.fromarray(image))[None])
    ids, mask = adapter.tokenizer([TEMPLATE.format(p).rstrip(".") for p in PROMPTS])  # ALBEF's caption cleaning
    _, texts = adapter.model.encode_text(ids, mask)
    return _choices((features @ texts.T / adapter.model.temp)[0].softmax(-1), image)


@torch.inference_mode()
def sam(adapter: Any, image: np.ndarray) -> sv.Detections:
    """SamModel + SamProcessor: one box, single-mask output, masks post-processed to the image."""
    processor = _processor(adapter)
    inputs = processor(images=image, input_boxes=[[segment_box(image)]], return_tensors="pt", **LAYOUT)
    outputs = adapter.model(**inputs, multimask_output=False)
    sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if "reshaped_input_sizes" in inputs else [])
    masks = processor.post_process_masks(outputs.pred_masks, *sizes)[0]
    return _mask(masks[:, 0].numpy(), outputs.iou_scores[0, :, 0].clamp(0, 1).numpy())


@torch.inference_mode()
def sam2(adapter: Any, image: np.ndarray) -> sv.Detections:
    """Sam2Model + Sam2Processor: as SAM, without ``original_sizes`` in the model call."""
    processor = _processor(adapter)
    inputs = processor(images=image, input_boxes=[[segment_box(image)]], return_tensors="pt", **LAYOUT)
    outputs = adapter.model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=False)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0]
    return _mask(masks[:, 0].numpy(), outputs.iou_scores[0, :, 0].clamp(0, 1).numpy())


@torch.inference_mode()
def segment_anything(adapter: Any, image: np.ndarray) -> sv.Detections:
    """``segment_anything``'s ``SamPredictor`` on the adapter's weights."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(adapter.model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=np.asarray(segment_box(image)), multimask_output=False)
    return _mask(masks, np.clip(scores, 0, 1))


@torch.inference_mode()
def sam3(adapter: Any, image: np.ndarray) -> sv.Detections:
    """Sam3Model + Sam3Processor one prompt at a time, then ``post_process_instance_segmentation``."""
    processor = _processor(adapter)
    found = []
    for index, prompt in enumerate(PROMPTS):
        inputs = processor(images=image, text=prompt, return_tensors="pt", **LAYOUT)
        outputs = adapter.model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        (result,) = processor.post_process_instance_segmentation(
            outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[image.shape[:2]]
        )
        found.append(
            sv.Detections(
                xyxy=_clipped(result["boxes"], image),
                mask=result["masks"].numpy().astype(bool),
                confidence=result["scores"].float().numpy(),
                class_id=np.full(len(result["scores"]), index),
            )
        )
    return sv.Detections.merge(found)


def _detectron2_demo(adapter: Any, image: np.ndarray, text: torch.Tensor, one_class: bool) -> sv.Detections:
    """The demos' ``reset_cls_test`` classifier from (C, D) text features (zero background column, columns
    L2-normalised), detectron2's PIL resize to 800/1333 and padding to 32, then the port's network (proven against
    the original code in test_detic_net)."""
    from model_adapters.detic_net.roi_heads import DetectionSettings

    zs = torch.cat([text.T, torch.zeros(text.shape[1], 1)], dim=1)
    zs = torch.nn.functional.normalize(zs, p=2, dim=0)  # as reset_cls_test
    height, width = image.shape[:2]
    scale = 800 / min(height, width)
    new_h, new_w = (800, scale * width) if height < width else (scale * height, 800)
    if max(new_h, new_w) > 1333:
        new_h, new_w = new_h * 1333 / max(new_h, new_w), new_w * 1333 / max(new_h, new_w)
    new_h, new_w = int(new_h + 0.5), int(new_w + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    # float32 arithmetic, as detectron2's ``(x - pixel_mean) / pixel_std`` on float32 tensors
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    padded = np.zeros((-(-new_h // 32) * 32, -(-new_w // 32) * 32, 3), dtype=np.float32)
    padded[:new_h, :new_w] = (resized - mean) / std
    pixels = torch.from_numpy(padded).permute(2, 0, 1)[None]
    settings = DetectionSettings(0.0, 0.5, 300, one_class)
    # The sweep asks with the default ``task``, detection: boxes only, no masks (those are proven in test_detic_net).
    (det,) = adapter.net(pixels, [(new_h, new_w)], [(height, width)], zs, settings=settings, with_masks=False)
    return sv.Detections(xyxy=det.boxes.numpy(), confidence=det.scores.numpy(), class_id=det.classes.numpy())


@torch.inference_mode()
def detic(adapter: Any, image: np.ndarray) -> sv.Detections:
    """Detic's demo: ``get_clip_embeddings`` = CLIP ViT-B/32 text features of "a " + name, one class per proposal."""
    tokenizer, model = adapter.text._models[adapter.default_text_encoder]  # the adapter's loaded weights
    tokens = tokenizer(["a " + p for p in PROMPTS], padding=True, return_tensors="pt")
    text = model.get_text_features(**tokens)
    return _detectron2_demo(adapter, image, getattr(text, "pooler_output", text), one_class=True)


@torch.inference_mode()
def vlpart(adapter: Any, image: np.ndarray) -> sv.Detections:
    """VLPart's demo: ``get_clip_embeddings`` = CLIP RN50 (open_clip) text features of "a " + lowercased name."""
    import open_clip

    name = adapter.default_text_encoder  # local-dir:<folder beside the checkpoint>
    model, _ = adapter.text._models[name]  # the adapter's loaded text tower: its weights, not its code path
    text = model.encode_text(open_clip.get_tokenizer(name)(["a " + p.lower() for p in PROMPTS]))
    return _detectron2_demo(adapter, image, text, one_class=False)


@torch.inference_mode()
def dino_embedding(adapter: Any, image: np.ndarray) -> np.ndarray:
    """DINOv2's linear-probe features: the processor's pixels, the model's forward, then the normalised
    ``[CLS, mean(patch tokens)]`` of the final layer norm (register tokens are neither)."""
    inputs = _processor(adapter)(images=image, return_tensors="pt", **LAYOUT)
    tokens = adapter.model(**inputs).last_hidden_state
    patches = tokens[:, 1 + getattr(adapter.model.config, "num_register_tokens", 0) :]
    features = torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)
    return torch.nn.functional.normalize(features, dim=-1).numpy()


REFERENCES: dict[str, Callable[[Any, np.ndarray], sv.Detections]] = {
    "grounding_dino": grounding_dino,
    "owlvit": owl,
    "owlv2": owl,
    "omdet_turbo": omdet_turbo,
    "clip": clip,
    "altclip": clip,
    "siglip": siglip,
    "siglip2": siglip,
    "blip": blip,
    "openclip": openclip,
    "fastvit": fastvit,
    "albef": albef,
    "detic": detic,
    "codet": detic,
    "vlpart": vlpart,
    "sam": sam,
    "sam2": sam2,
    "segment_anything": segment_anything,
    "sam3": sam3,
}
EMBEDDINGS: dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {
    "dinov2": dino_embedding,
}
