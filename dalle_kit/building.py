"""Building a recipe's parts: on the run's device, with the context their kind names, failing in one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import distributed, hints
from .errors import UserError, one_line
from .recipe import Recipe


def build_part(spec, section: str, **context: Any):
    """``spec.info.cls(spec.config, **context)``; an exception other than a `UserError` becomes one line naming
    the section, the part, the distribution that provides it and the cause (the original stays as __cause__)."""
    try:
        return spec.info.cls(spec.config, **context)
    except UserError:
        raise
    except Exception as exc:
        info = spec.info
        raise UserError(
            f"[{section}] {info.kind.replace('_', ' ')} '{info.name}' (from {info.origin}) could not be built: "
            f"{one_line(exc)}; check its settings with `{hints.dalle_kit(f'plugins show {info.name}')}` "
            f"(--traceback shows where it failed)"
        ) from exc


def check_parts(recipe: Recipe, *, prerequisites: bool = True) -> None:
    """Build every part the recipe names once, on the CPU, and discard it: a part whose constructor fails (a size it
    does not support) is reported now, in one line, before any run directory exists. Datasets are only asked for
    their image size and channels; every other part is built with the context its kind's ``build_context`` names
    (``text_dim`` from the recipe's text encoder, ``image_size`` and ``channels`` from its dataset).

    ``prerequisites=False`` (``recipe check``) lets a part's own `UserError` pass, such as a text encoder whose
    ``pretrained`` run has not been trained yet: the recipe can be checked before the runs it builds on exist (the
    parts that need that encoder's ``text_dim`` are then not built)."""
    sections = recipe.pipeline.info.cls.sections
    data = build_part(recipe.parts["data"], "data") if "data" in recipe.parts else None
    context: dict[str, Any] = {} if data is None else {"image_size": data.image_size, "channels": data.channels}
    later = []
    for section, kind in sections.items():
        spec = recipe.parts.get(section)
        if spec is None or kind == "dataset":
            continue
        if spec.info.cls.build_context:
            later.append((section, spec))
            continue
        try:
            part = build_part(spec, section)
        except UserError as exc:
            if prerequisites or exc.__cause__ is not None:  # a constructor that crashed is always reported
                raise
            continue
        if kind == "text_encoder":
            context["text_dim"] = part.dim
        del part
    for section, spec in later:  # built once with their context and discarded
        needed = spec.info.cls.build_context
        if all(key in context for key in needed):
            build_part(spec, section, **{key: context[key] for key in needed})
    if data is not None:
        recipe.pipeline.info.cls(recipe.train).check(data.image_size, data.channels, context.get("text_dim"))


def pick_device(name: str) -> torch.device:
    """The recipe's ``device``; 'auto' and 'cuda' mean this process's own GPU (LOCAL_RANK) under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f'device \'{name}\' asked for but CUDA is not available here; set device = "auto" or "cpu"')
    if device.type == "cuda" and device.index is None and distributed.requested():
        device = torch.device("cuda", distributed.local_rank())
    return device


class PartBuilder:
    """Builds the parts a recipe names (``run.parts``): modules on `device`, wrapped for multi-process training."""

    def __init__(self, recipe: Recipe, device: torch.device):
        self.recipe = recipe
        self.device = device

    def build(self, section: str, **context: Any):
        """The part named in ``[section]`` built with its settings and `context` (a module moved to the device); a
        constructor that raises becomes a one-line `UserError` naming the part (`build_part`)."""
        part = build_part(self.recipe.parts[section], section, **context)
        if isinstance(part, torch.nn.Module):
            part = part.to(self.device)
        return part

    def dataset(self, section: str = "data"):
        """The dataset in ``[section]`` (not loaded: call its ``load(split)``)."""
        return build_part(self.recipe.parts[section], section)

    def text_encoder(self, saved: dict[str, Any] | None, captions: Sequence[str] | None = None):
        """The recipe's text encoder: its non-tensor state (a vocabulary) restored from `saved` (a checkpoint holding
        ``extra.text_encoder``), else fitted on `captions`. Its weights are loaded later, with the other modules."""
        encoder = self.build("text_encoder")
        if saved is not None:
            encoder.load_extra_state_json(saved["extra"]["text_encoder"])
        else:
            encoder.fit(captions)
        return encoder.to(self.device)

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` for the forward passes that train it: DistributedDataParallel when several processes train
        (gradients averaged over the ranks in backward), the module itself otherwise (`dalle_kit.distributed`)."""
        return distributed.parallel(
            module, self.device, sync_batchnorm=getattr(self.recipe.train, "sync_batchnorm", False)
        )
