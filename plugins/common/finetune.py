"""Fine-tuning modes: which weights of a run started from another run's (``init_from``) train (``finetune``).

Modes (the recipe's top-level ``finetune``):

- ``full``: every weight trains.
- ``conditioning``: only the layers that read the text train: those a generator or discriminator
  names in ``conditioning_layers``, and the text encoder if it is trainable.
- ``lora``: those layers' weights freeze too; each ``nn.Linear`` in them gets a low-rank update
  W + B A (Hu et al. 2022, rank ``lora_rank``, B zero at the start so training starts from the
  source run exactly). The update is a `torch.nn.utils.parametrize` parametrization, so it stacks
  with spectral norm and lives in the ordinary state dict.

Pipelines call `dalle_kit.init_from_state(run)` when a run starts without its own checkpoint (a text
encoder takes its vocabulary from the source's extra state), then `prepare` on the built parts: it loads the
source's weights and applies the mode. `prepare` runs also before a run's own checkpoint is loaded
(resume, sample), so the adapters exist when their weights are read.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from dalle_kit import TextEncoder, UserError, load_modules


class LowRankUpdate(nn.Module):
    """A parametrization ``W -> W + up @ down`` with ``up`` [out, rank] (zeros at the start) and ``down`` [rank, in]."""

    def __init__(self, out_features: int, in_features: int, rank: int):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.up @ self.down


def load_weights(parts: dict[str, nn.Module], state: dict[str, Any]) -> None:
    """Load the source run's weights into each part, failing with one line when a part does not fit."""
    load_modules(parts, state, source=f"init_from {state['dir']}")


def _conditioning(part: nn.Module) -> list[nn.Module]:
    if isinstance(part, TextEncoder):
        return [part] if part.trainable else []
    patterns = getattr(part, "conditioning_layers", ())
    return [m for name, m in part.named_modules() if name and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _unique(parts: dict[str, nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for part in parts.values():
        for p in part.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def apply_mode(mode: str, parts: dict[str, nn.Module], rank: int = 4) -> tuple[int, int]:
    """Freeze what the mode does not train and add adapters; returns (trainable, total) parameter counts."""
    if mode != "full":
        targets = [m for part in parts.values() for m in _conditioning(part)]
        if not targets:
            names = ", ".join(f"{k} '{getattr(p, 'name', type(p).__name__)}'" for k, p in parts.items())
            raise UserError(
                f"finetune = '{mode}': none of the parts ({names}) declares conditioning layers and the text "
                f"encoder is frozen; use finetune = 'full'"
            )
        for part in parts.values():
            part.requires_grad_(False)
        if mode == "conditioning":
            for m in targets:
                m.requires_grad_(True)
        elif mode == "lora":
            linears = {id(lin): lin for m in targets for lin in m.modules() if isinstance(lin, nn.Linear)}
            for lin in linears.values():
                weight = lin.weight
                parametrize.register_parametrization(
                    lin, "weight", LowRankUpdate(weight.shape[0], weight.shape[1], rank).to(weight.device, weight.dtype)
                )
        else:
            raise ValueError(f"unknown fine-tuning mode {mode!r}")
    params = _unique(parts)
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def prepare(run, parts: dict[str, nn.Module], source: dict[str, Any] | None) -> None:
    """Load `source` (from `dalle_kit.init_from_state`) into `parts`, apply the recipe's mode; when starting from a run,
    print and log (``kind = "finetune"``) how many parameters train."""
    if source is not None:
        load_weights(parts, source)
    trainable, total = apply_mode(run.recipe.finetune, parts, run.recipe.lora_rank)
    if source is not None:
        run.say(
            f"finetune {run.recipe.finetune} from {source['dir']} (step {source['step']}): "
            f"{trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)"
        )
        run.log(0, kind="finetune", mode=run.recipe.finetune, init_from=source["dir"], trainable=trainable, total=total)
