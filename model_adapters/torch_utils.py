"""Device, dtype and weight-loading helpers shared by adapters; torch is imported only when called."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_adapters.base import Adapter, AdapterLoadError, ModelSpec, ResizeRule, Task

__all__ = [
    "CHANNELS_LAST",
    "SEGMENTER_MAX_SIDE",
    "check_device",
    "download_file",
    "from_pretrained",
    "load_transformers_model",
    "local_path",
    "missing_path",
    "resize_rule_of",
    "resize_rule_of_transform",
    "resolve_device",
    "resolve_dtype",
    "to_device",
]

_DTYPES = ("float32", "float16", "bfloat16")
# ``input_data_format`` for transformers image processors: adapters hand them (H, W, 3) arrays. Left to guess,
# a processor reads an image 1, 3 or 4 px tall as channels-first, and transposes it or fails.
CHANNELS_LAST = "channels_last"
# Segmenters see at most this many pixels on the long side (their masks are resized back to the image): SAM-style
# models work at 1024, so 4096 keeps mask edges within a quarter pixel of their own upsampling.
SEGMENTER_MAX_SIDE = 4096


def resolve_device(name: str) -> str:
    """Map ``"auto"`` to the best available device (cuda, then mps, then cpu); check explicit names."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdapterLoadError(
            f"device {name!r} was asked for but CUDA is not available here (torch {torch.__version__} is built for "
            f"CUDA {torch.version.cuda or 'none'}; CUDA 13 needs an NVIDIA driver >= 580); use 'cpu' or 'auto'"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise AdapterLoadError("device 'mps' was asked for but MPS is not available here; use 'cpu' or 'auto'")
    return name


def check_device(name: str) -> str:
    """Resolve ``name`` and make sure this torch build can run on it (GPU index and compute capability).

    Raises:
        AdapterLoadError: The device is missing, or the GPU is older than every architecture torch was built for.
    """
    import torch

    device = resolve_device(name)
    if not device.startswith("cuda"):
        return device
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        raise AdapterLoadError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    major, minor = torch.cuda.get_device_capability(index)
    built = torch.cuda.get_arch_list()
    if built and not _runs_on(built, major, minor):
        raise AdapterLoadError(
            f"GPU {index} ({torch.cuda.get_device_name(index)}, compute capability {major}.{minor}) is older than "
            f"this torch build supports ({torch.__version__}, CUDA {torch.version.cuda}: {', '.join(built)}); "
            "install a torch build for it (see the README's Docker section) or use 'cpu'"
        )
    return device


def _runs_on(built: Sequence[str], major: int, minor: int) -> bool:
    """Whether kernels built for ``built`` (``sm_80``, ``compute_90``) run on a GPU of capability major.minor."""
    for arch in built:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit():
            continue
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True  # same generation, older or equal minor: binary compatible
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True  # PTX is compiled for newer GPUs at load time
    return False


def resolve_dtype(name: str, device: str) -> Any:
    """Map a dtype name to ``torch.dtype``; ``"auto"`` is float16 on CUDA and float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise AdapterLoadError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {name!r}")
    return getattr(torch, name)


def to_device(obj: Any, device: str, dtype: Any) -> Any:
    """Move every tensor in a (nested) dict/list/tuple to ``device``; floating tensors also to ``dtype``.

    Plain dicts are copied; dict subclasses (a model's output object) are updated in place, keeping their type.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device, dtype=dtype if obj.is_floating_point() else None)
    if isinstance(obj, dict):
        moved = {key: to_device(value, device, dtype) for key, value in obj.items()}
        if type(obj) is dict:
            return moved
        for key, value in moved.items():
            obj[key] = value
        return obj
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(value, device, dtype) for value in obj)
    return obj


def local_path(model_id: str) -> Path | None:
    """``model_id`` as a local path when it clearly is one, else ``None`` (then it is a hub id).

    Clearly a path: absolute; starting with ``./``, ``../`` or ``~``; more than one ``/`` (hub ids are
    ``org/name``); or something that exists, or whose parent directory exists. ``~`` is expanded.
    """
    path = Path(model_id).expanduser()
    if (
        path.is_absolute()
        or model_id.startswith(("./", "../", "~"))
        or model_id.count("/") > 1
        or path.exists()
        or (path.parent != Path(".") and path.parent.is_dir())
    ):
        return path
    return None


def missing_path(adapter: str, path: Path, kind: str, instead: str) -> AdapterLoadError:
    """The error for a ``model_id`` naming a local file or directory that is not there, with what to check.

    Args:
        adapter: Adapter name, for the message.
        path: The path that does not exist.
        kind: ``"file"`` or ``"directory"``.
        instead: What else ``model_id`` may be, e.g. ``"a Hugging Face hub id such as 'org/name'"``.
    """
    where = "" if path.is_absolute() else f" (relative to its working directory {os.getcwd()})"
    return AdapterLoadError(
        f"{adapter}: no such {kind}: {path}. model_id paths are read on the prelabel server{where}: check the "
        f"path and that it is mounted there, or use {instead}"
    )


def from_pretrained(loader: Callable[..., Any], spec: ModelSpec, **kwargs: Any) -> Any:
    """Call a ``from_pretrained``-style loader, turning failures into an error that says what to do.

    A ``model_id`` that is clearly a local path (see ``local_path``) must be a directory there; a hub id that
    cannot be fetched (offline, private, typo) gets a message naming the id and how to point prelabel at a local
    copy instead.
    """
    path = local_path(spec.model_id)
    if path is not None and not path.exists():
        raise missing_path(spec.adapter, path, "directory", "a Hugging Face hub id such as 'org/name'")
    if path is not None and not path.is_dir():
        raise AdapterLoadError(
            f"{spec.adapter}: {path} is a file; model_id must be the model's directory (config.json and weights, "
            "as save_pretrained or `hf download` write it)"
        )
    source = spec.model_id if path is None else str(path)
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        if path is not None:
            raise AdapterLoadError(f"{spec.adapter}: could not load the local directory {path}: {reason}") from exc
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise AdapterLoadError(
            f"{spec.adapter}: could not load {spec.model_id!r} as a Hugging Face hub id{offline}: {reason}. "
            f"Download it once (e.g. `hf download {spec.model_id} --local-dir /models/x`) and set "
            f'"model_id": "/models/x" in the project\'s extra_params or PRELABEL_DEFAULTS.'
        ) from exc


def load_transformers_model(adapter: Adapter, model_class: str, model_types: Sequence[str]) -> tuple[Any, Any]:
    """Load a transformers checkpoint for an adapter: device and dtype, processor, model in eval mode.

    The config is read first and its ``model_type`` checked against ``model_types``, so weights of another
    family fail with a message naming both, not deep inside ``load_state_dict``.

    Returns:
        ``(processor, model)``; ``adapter.device``, ``adapter.dtype`` and, for detectors and classifiers (whose
        answers do not keep the input's resolution), ``adapter.resize_rule`` are set.
    """
    import transformers

    adapter.device = resolve_device(adapter.spec.device)
    adapter.dtype = resolve_dtype(adapter.spec.dtype, adapter.device)
    config = from_pretrained(transformers.AutoConfig.from_pretrained, adapter.spec)
    if config.model_type not in model_types:
        raise AdapterLoadError(
            f"{adapter.spec.model_id!r} is a {config.model_type!r} model, not {' or '.join(model_types)}; "
            f"pick the adapter for that family in the project's settings"
        )
    processor = from_pretrained(transformers.AutoProcessor.from_pretrained, adapter.spec)
    loader = getattr(transformers, model_class).from_pretrained
    model = from_pretrained(loader, adapter.spec, config=config, dtype=adapter.dtype)
    if adapter.task is not Task.SEGMENTATION:  # AutoProcessor gives a bare image processor for image-only models
        adapter.resize_rule = resize_rule_of(getattr(processor, "image_processor", processor))
    else:  # masks keep their input's size: cap it only where memory would run away (huge aerial images)
        adapter.resize_rule = ResizeRule(longest=SEGMENTER_MAX_SIDE)
    return processor, model.to(adapter.device).eval()


def resize_rule_of(image_processor: Any) -> ResizeRule | None:
    """The resize a transformers image processor applies, from its ``size`` (``None`` when it does not resize)."""
    size = getattr(image_processor, "size", None)
    if size is None or not getattr(image_processor, "do_resize", True):
        return None

    def edge(key: str) -> int | None:
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        return int(value) if value else None

    height, width = edge("height"), edge("width")
    if height and width:
        return ResizeRule(shortest=max(height, width))
    shortest, longest = edge("shortest_edge"), edge("longest_edge")
    return ResizeRule(shortest, longest) if shortest or longest else None


def resize_rule_of_transform(transform: Any) -> ResizeRule | None:
    """The resize of a torchvision ``Compose`` (open_clip, timm): its first ``Resize`` (``None`` without one)."""
    from torchvision.transforms import Resize

    for step in getattr(transform, "transforms", ()):
        if isinstance(step, Resize):
            size = step.size if isinstance(step.size, int) else max(step.size)
            return ResizeRule(shortest=int(size), longest=step.max_size)
    return None


def download_file(url: str, path: Path) -> None:
    """Download ``url`` to ``path`` through a temporary file in the same folder, so a partial file never counts.

    Every read has a timeout: a stalled server fails the load (retried later) instead of holding the loader.
    """
    import tempfile

    import requests

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as file, requests.get(url, stream=True, timeout=(10, 60)) as response:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                file.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
