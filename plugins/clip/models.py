"""Loading open_clip models by architecture and weights source, for the `clip` parts (no entry point).

``pretrained`` (the weights) is one of:

- ``""``: random initialisation;
- a `clip-pretrain` run directory, or its name prefix (``runs/shapes-clip-pretrain`` = the newest finished
  run, see `dalle_kit.resolve_run_dir`); any folder with ``open_clip_config.json`` and
  ``open_clip_model.safetensors`` (open_clip's own "local-dir" layout) works the same;
- a local open_clip checkpoint file (a state dict: .pt, .pth, .bin or .safetensors);
- an open_clip pretrained tag (``laion2b_s34b_b79k``), only if its file is already in the local cache:
  nothing is ever downloaded, so a missing tag fails at once with one line instead of waiting on the network.

``model`` (the architecture) is an open_clip model name (``open_clip.list_models()``), a JSON model config
file (bare, or open_clip's ``{"model_cfg": ..., "preprocess_cfg": ...}``), or ``""``: the run's own config
for a run directory, else dalle-kit's tiny CLIP (`tiny_config`). open_clip is imported on first use only
(it takes seconds), so discovering the plugins stays fast.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import hints
from dalle_kit.tools.cache import file_digest
from dalle_kit import resolve_run_dir

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TINY = "tiny"  # how the built-in architecture is named in protocols and messages
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def tiny_config(
    embed_dim: int = 128,
    width: int = 128,
    vision_layers: int = 3,
    text_layers: int = 2,
    patch_size: int = 8,
    image_size: int = 32,
    context_length: int = 16,
    head_width: int = 32,
) -> dict[str, Any]:
    """An open_clip model config for a small ViT-and-transformer CLIP (the `clip-pretrain` default)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": vision_layers,
            "width": width,
            "patch_size": patch_size,
            "head_width": head_width,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // head_width),
            "layers": text_layers,
        },
    }


def default_preprocess(image_size: int | tuple[int, int]) -> dict[str, Any]:
    """open_clip's default preprocessing (OpenAI mean and std, bicubic) at `image_size`."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg

    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(PreprocessCfg()).items()}
    return {**cfg, "size": image_size}


@attrs.frozen
class Source:
    """Where the weights come from: kind is "random", "run" (an open_clip folder), "file" or "tag"."""

    kind: str
    path: Path | None = None  # the folder for "run", the weights file for "file" and "tag"
    tag: str = ""
    tag_cfg: dict = attrs.field(factory=dict)

    @property
    def weights_file(self) -> Path | None:
        return self.path / WEIGHTS_FILE if self.kind == "run" else self.path

    def describe(self) -> str:
        return {
            "random": "random init",
            "run": f"run {self.path}",
            "file": f"file {self.path}",
            "tag": f"open_clip tag {self.tag}",
        }[self.kind]


@attrs.define
class LoadedClip:
    """An open_clip model (eval mode, on CPU), its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    architecture: str
    source: Source

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        from open_clip import get_model_preprocess_cfg

        return get_model_preprocess_cfg(self.model)

    def weights_hash(self) -> str:
        file = self.source.weights_file
        return file_digest(file) if file is not None else ""

    def describe(self) -> str:
        """The extractor, for protocols: ``open_clip ViT-B-32 (open_clip tag laion2b_s34b_b79k)``."""
        if self.source.kind == "run":
            return f"open_clip CLIP of {self.source.describe()}"
        return f"open_clip {self.architecture} ({self.source.describe()})"


# ---------------------------------------------------------------------------- resolving `pretrained`
def resolve_source(model: str, pretrained: str, *, key: str) -> Source:
    """Find the weights `pretrained` names, without building anything; one-line `UserError` when they are missing."""
    text = pretrained.strip()
    where = f"{key} pretrained '{pretrained}'"
    if not text:
        return Source("random")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise dalle_kit.UserError(
                f"{where}: not an open_clip checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); "
                "give a state-dict file, a clip-pretrain run directory or an open_clip tag"
            )
        return Source("file", path)
    if path.is_dir() and not (path / "recipe.toml").is_file():
        return _folder(path, where)
    looks_like_path = os.sep in text or "/" in text or text.startswith((".", "~")) or path.exists()
    if not looks_like_path and _known_tag(model, text) is not None:
        return _cached_tag(model, text, where)
    if not looks_like_path and _tag_models(text):
        raise dalle_kit.UserError(
            f"{where}: an open_clip tag of {', '.join(_tag_models(text)[:4])}; set {key} model "
            "to that architecture, or give a local checkpoint file or a clip-pretrain run directory"
        )
    try:
        run_dir = resolve_run_dir(path, what=f"{key} pretrained")
    except dalle_kit.UserError as exc:
        raise dalle_kit.UserError(
            f"{exc}; pretrained takes a clip-pretrain run, a local open_clip checkpoint file or a cached open_clip tag"
        ) from None
    return _folder(run_dir, where)


def pin_pretrained(config, *, key: str):
    """`config` (with ``model`` and ``pretrained``) whose run-name prefix is replaced by the run directory it means now."""
    source = resolve_source(config.model, config.pretrained, key=key)
    if source.kind == "run" and Path(config.pretrained).expanduser() != source.path:
        return attrs.evolve(config, pretrained=str(source.path))
    return config


def _folder(path: Path, where: str) -> Source:
    if not (path / CONFIG_FILE).is_file():
        raise dalle_kit.UserError(
            f"{where}: {path} has no {CONFIG_FILE}; name a clip-pretrain run "
            f"({hints.dalle_kit('run shapes-clip-pretrain')}) or a local checkpoint file"
        )
    if not (path / WEIGHTS_FILE).is_file():
        raise dalle_kit.UserError(
            f"{where}: {path} has no {WEIGHTS_FILE} yet; let the clip-pretrain run reach "
            "its first checkpoint (or resume it)"
        )
    return Source("run", path)


def _known_tag(model: str, tag: str) -> dict | None:
    if not model or model.endswith(".json"):
        return None
    from open_clip import get_pretrained_cfg

    cfg = get_pretrained_cfg(model.replace("/", "-"), tag)
    return cfg or None


def _tag_models(tag: str) -> list[str]:
    from open_clip import list_pretrained_models_by_tag

    return list_pretrained_models_by_tag(tag)


def _cached_tag(model: str, tag: str, where: str) -> Source:
    """The local file of an open_clip tag, looked up in the caches open_clip downloads into (never the network)."""
    cfg = _known_tag(model, tag)
    found = None
    if cfg.get("file"):
        found = Path(cfg["file"]) if Path(cfg["file"]).is_file() else None
    if found is None and cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" means open_clip's default file name
        filename = filename or HF_WEIGHTS_NAME
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else str(Path(filename).with_suffix(".safetensors"))
        for name in dict.fromkeys([safe, filename]):  # open_clip prefers the safetensors copy
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and Path(hit).is_file():
                found = Path(hit)
                break
    if found is None and cfg.get("url"):
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        found = candidate if candidate.is_file() else None
    if found is None:
        raise dalle_kit.UserError(
            f"{where}: open_clip tag not in the local cache and dalle-kit never downloads (this machine "
            "may be offline); give a local checkpoint file or a clip-pretrain run directory, or fetch it once "
            f"where there is a network: open_clip.create_model('{model}', pretrained='{tag}')"
        )
    return Source("tag", found, tag=tag, tag_cfg=cfg)


# ---------------------------------------------------------------------------- building
def load_clip(model: str, pretrained: str, *, key: str) -> LoadedClip:
    """Build the open_clip model `model` with the weights `pretrained` (see the module docstring), in eval mode."""
    source = resolve_source(model, pretrained, key=key)
    where = f"{key} pretrained '{pretrained}'"
    try:
        if source.kind == "run":
            if model:
                raise dalle_kit.UserError(
                    f"{key} model '{model}': leave model empty with a clip-pretrain run; "
                    f"its {CONFIG_FILE} fixes the architecture"
                )
            model_cfg, preprocess = read_config(source.path / CONFIG_FILE, key)
            architecture = str(source.path / CONFIG_FILE)
            net = instantiate(model_cfg, preprocess, source.weights_file)
        elif not model or model.endswith(".json"):
            model_cfg, preprocess = read_config(Path(model), key) if model else (tiny_config(), None)
            architecture = model or TINY
            net = instantiate(model_cfg, preprocess, source.weights_file)
        else:
            architecture = model
            net, model_cfg = _create_named(model, source, key)
    except dalle_kit.UserError:
        raise
    except Exception as exc:  # a state dict that does not fit the architecture, a corrupt file...
        raise dalle_kit.UserError(
            f"{where}: cannot load it into architecture '{model or 'from the run'}' "
            f"({dalle_kit.one_line(exc)[:300]}); set {key} model to the architecture "
            "the weights were trained with"
        ) from None
    net.eval()
    return LoadedClip(net, tokenizer_for(model_cfg, model), architecture, source)


def read_config(path: Path, key: str) -> tuple[dict, dict | None]:
    """(model config, preprocess config or None) from a bare or an open_clip-folder style JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise dalle_kit.UserError(
            f"{key} model '{path}': cannot read the open_clip model config "
            f"({type(exc).__name__}: {exc}); give an open_clip model name or a JSON config file"
        ) from None
    model_cfg = data.get("model_cfg", data)
    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise dalle_kit.UserError(
            f"{key} model '{path}': not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
        )
    return model_cfg, data.get("preprocess_cfg")


def instantiate(model_cfg: dict, preprocess: dict | None = None, weights: Path | None = None) -> torch.nn.Module:
    """An open_clip CLIP (or CustomTextCLIP) from a config dict, with strictly loaded weights if given."""
    import open_clip

    cfg = copy.deepcopy(model_cfg)
    text_cfg, vision_cfg = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if "multimodal_cfg" in cfg:
        raise dalle_kit.UserError("CoCa models (multimodal_cfg) are not supported; use a CLIP architecture")
    custom_text = cfg.pop("custom_text", False) or bool(text_cfg.get("hf_model_name"))
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_pretrained"] = False  # weights come from the checkpoint; nothing is downloaded
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False
    net = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
    if weights is not None:
        open_clip.load_checkpoint(net, str(weights), strict=True)
    size = vision_cfg.get("image_size", 224)
    open_clip.set_model_preprocess_cfg(net, {**default_preprocess(size), **(preprocess or {}), "size": size})
    return net


def _create_named(model: str, source: Source, key: str) -> tuple[torch.nn.Module, dict]:
    import open_clip

    model_cfg = open_clip.get_model_config(model)
    if model_cfg is None:
        raise dalle_kit.UserError(
            f"{key} model '{model}': not an open_clip architecture nor a .json config file; "
            f"see open_clip.list_models() (e.g. ViT-B-32, RN50)"
        )
    kwargs: dict[str, Any] = {}
    if source.kind == "tag":
        kwargs["force_preprocess_cfg"] = {
            k: source.tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in source.tag_cfg
        }
        kwargs["force_quick_gelu"] = bool(source.tag_cfg.get("quick_gelu", False))
    path = str(source.weights_file) if source.weights_file is not None else None
    net = open_clip.create_model(model, pretrained=path, **kwargs)
    return net, model_cfg


def tokenizer_for(model_cfg: dict, model: str = "") -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for a model config (SimpleTokenizer at its context length, unless it names an HF one)."""
    text_cfg = model_cfg.get("text_cfg", {})
    if model and not model.endswith(".json"):
        import open_clip

        return open_clip.get_tokenizer(model)
    if text_cfg.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=text_cfg.get("context_length", 77),
            **(text_cfg.get("tokenizer_kwargs") or {}),
        )
    return _simple_tokenizer(int(text_cfg.get("context_length", 77)))


@functools.lru_cache(maxsize=8)
def _simple_tokenizer(context_length: int):
    from open_clip import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


# ---------------------------------------------------------------------------- images
def preprocess_images(images: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] images [N, C, H, W] -> the model's input: resized and normalised per `cfg`.

    Follows open_clip's inference transform on tensors: resize_mode "shortest" (resize the short side, centre
    crop), "longest" (fit inside, pad with fill_color) or "squash"; then (x - mean) / std on [0, 1] values.
    """
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float().add(1.0).div(2.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    size = cfg.get("size", x.shape[-1])
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    h, w = x.shape[-2:]
    if (h, w) != (th, tw):
        mode = {"bicubic": "bicubic", "bilinear": "bilinear"}.get(cfg.get("interpolation", "bicubic"), "nearest")
        resize_mode = cfg.get("resize_mode", "shortest")
        if resize_mode == "squash":
            scale_h, scale_w = th / h, tw / w
        else:
            pick = max if resize_mode == "shortest" else min
            scale_h = scale_w = pick(th / h, tw / w)
        nh, nw = max(1, round(h * scale_h)), max(1, round(w * scale_w))
        x = F.interpolate(
            x, size=(nh, nw), mode=mode, antialias=mode != "nearest", align_corners=False if mode != "nearest" else None
        )
        x = x.clamp(0, 1)
        if (nh, nw) != (th, tw):  # centre crop (shortest) or centre pad (longest)
            top, left = (nh - th) // 2, (nw - tw) // 2
            if resize_mode == "shortest":
                x = x[..., top : top + th, left : left + tw]
            else:
                fill = cfg.get("fill_color", 0) / 255.0
                x = F.pad(x, (-left, tw - nw + left, -top, th - nh + top), value=fill)
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std
