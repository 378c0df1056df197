"""Conformance kit: check a part against its kind's contract, from your own pytest run.

    from dalle_kit.tools.testing import check_part

    def test_my_part():
        check_part(MyPart)                           # every check that applies to its kind

    def test_my_part_at_64px():
        check_part(MyPart, MyPart.Config(width=32), image_size=64)

Each check is also a function of its own (``check_output_shape(MyPart)``, ...); each raises
`ConformanceError` (an AssertionError) whose message names the part, the check and what was
expected. The built-in parts are tested with this same kit.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MethodType
from typing import Any, NoReturn, cast

import attrs
import tomli_w
import torch

from ..checkpoint import load_state, save_state
from ..errors import RecipeError, one_line
from ..parts import KINDS, Dataset, Part, Pipeline, TextEncoder
from ..schema import structure, unstructure

CAPTIONS = ["a red circle", "a small blue square in the top left", "a photo of a cat", "a large green triangle"]
CONTEXT = {"text_dim": 16, "image_size": 32, "channels": 3}


class ConformanceError(AssertionError):
    """A part breaks its kind's contract."""


def fail(cls: type[Part], check: str, message: str) -> NoReturn:
    """Raise the `ConformanceError` of `cls` failing `check` (for the checks a kind registers)."""
    raise ConformanceError(f"{cls.kind} '{cls.name or cls.__name__}' fails {check}: {message}")


def _seeded(fn: Callable[[], Any], seed: int):
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return fn()
    finally:
        torch.set_rng_state(state)


class Harness:
    """How to build a network part of any kind and feed it a fixed batch: the kind's `example_inputs` and
    `expected_shape` (`dalle_kit.Part`), so the same checks serve the core's kinds and those plugins add."""

    def __init__(self, cls: type[Part], config: Any = None, captions: Sequence[str] = CAPTIONS, **context: Any):
        self.cls = cls
        self.config = config if config is not None else cls.Config()
        self.captions = list(captions)
        self.context = {**CONTEXT, **context}

    def build(self, seed: int = 0):
        def make():
            if issubclass(self.cls, TextEncoder):
                part = self.cls(self.config)
                part.fit(self.captions)
                return part
            return self.cls(self.config, **{k: self.context[k] for k in self.cls.build_context})

        return _seeded(make, seed)

    def inputs(self, model, text_shift: bool = False) -> tuple:
        """A fixed batch for `model` (tensors in its dtype and on its device); `text_shift`: the same with other texts."""
        n = len(self.captions)
        args = self.cls.example_inputs(
            model,
            n=n,
            context={**self.context, "captions": self.captions},
            rng=torch.Generator().manual_seed(1),
            text_shift=text_shift,
        )
        if args is None:  # what iterating None raised, with the reason
            raise TypeError(f"{self.cls.kind} parts are not networks: their kind gives no example_inputs")
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return tuple(a.to(device, dtype) if isinstance(a, torch.Tensor) else a for a in args)

    def run(self, model, text_shift: bool = False) -> torch.Tensor:
        args = self.inputs(model, text_shift)
        return model.encode(*args) if issubclass(self.cls, TextEncoder) else model(*args)

    def expected_shape(self, model) -> tuple[int, ...] | None:
        return self.cls.expected_shape(model, n=len(self.captions), context=self.context)


def is_network(cls: type[Part]) -> bool:
    """Whether `cls`'s kind describes how to feed its parts (`Part.example_inputs`): then the network checks apply."""
    return getattr(cls.example_inputs, "__func__", None) is not cast(MethodType, Part.example_inputs).__func__


# --------------------------------------------------------------------------- checks for every kind
def check_registration(cls: type, config: Any = None, registry=None, **_: Any) -> None:
    """A subclass of its kind's base, with a `name` and an attrs `Config` that constructs."""
    kinds = _kinds(registry)
    if not (isinstance(cls, type) and issubclass(cls, Part) and cls.kind in kinds and issubclass(cls, kinds[cls.kind])):
        raise ConformanceError(f"{cls!r} is not a subclass of one of the installed part kinds ({', '.join(kinds)})")
    if not cls.name:
        fail(cls, "registration", "class attribute `name` is empty")
    if not attrs.has(cls.Config):
        fail(cls, "registration", "`Config` is not an attrs class")


def check_schema_roundtrip(cls: type[Part], config: Any = None, **_: Any) -> None:
    """config -> TOML -> config gives an equal config."""
    config = config if config is not None else cls.Config()
    try:
        back = structure(
            cls.Config, tomllib.loads(tomli_w.dumps(unstructure(config))), source="<round-trip>", section=cls.kind
        )
    except (RecipeError, TypeError, ValueError) as exc:
        fail(cls, "schema round-trip", f"the config does not survive TOML: {exc}")
    if back != config:
        fail(cls, "schema round-trip", f"{config!r} came back from TOML as {back!r}")


# --------------------------------------------------------------------------- checks for network parts
def check_output_shape(cls: type[Part], config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    model = h.build()
    if issubclass(cls, TextEncoder) and (not isinstance(getattr(model, "dim", None), int) or model.dim < 0):
        fail(cls, "output shape", f"dim must be an int >= 0 (0: no conditioning), got {getattr(model, 'dim', None)!r}")
    out = h.run(model)
    expected = h.expected_shape(model)
    if expected is not None and tuple(out.shape) != expected:
        fail(cls, "output shape", f"got {tuple(out.shape)}, expected {expected}")


def check_output_range(cls: type[Part], config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    out = h.run(h.build())
    if out.dtype != torch.float32:
        fail(cls, "output range", f"output dtype is {out.dtype}, expected float32")
    if not torch.isfinite(out).all():
        fail(cls, "output range", "output has NaN or infinite values")
    if cls.output_range is not None:
        low, high = cls.output_range
        if out.min() < low - 1e-5 or out.max() > high + 1e-5:
            fail(
                cls,
                "output range",
                f"values must lie in [{low:g}, {high:g}], got [{out.min().item():.3f}, {out.max().item():.3f}]",
            )


def check_gradients(cls: type[Part], config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    model = h.build()
    if issubclass(cls, TextEncoder) and not model.trainable:
        return  # a frozen encoder owes no gradients
    args = h.inputs(model)
    for i in cls.grad_inputs:
        args[i].requires_grad_(True)
    out = model.encode(*args) if issubclass(cls, TextEncoder) else model(*args)
    if not out.requires_grad:
        fail(cls, "gradients", "the output is detached from the parameters (no grad_fn)")
    out.float().square().mean().backward()
    params = list(model.parameters())
    if params and not any(p.grad is not None and p.grad.abs().sum() > 0 for p in params):
        fail(cls, "gradients", "no parameter receives a gradient from the output")
    for i in cls.grad_inputs:
        if args[i].grad is None or args[i].grad.abs().sum() == 0:
            fail(
                cls, "gradients", f"no gradient reaches input {i} of the {cls.kind} (the kind's contract asks for one)"
            )


def check_conditioning(cls: type[Part], config: Any = None, **kw: Any) -> None:
    """Different texts give different outputs (for an encoder: different captions, different vectors; an encoder of
    dim 0, and a kind whose ``conditioned`` is False, declare no conditioning and are exempt)."""
    h = Harness(cls, config, **kw)
    model = h.build()
    if not cls.conditioned or (issubclass(cls, TextEncoder) and model.dim == 0):  # declared unconditional
        return
    model.eval()
    with torch.no_grad():
        a, b = h.run(model), h.run(model, text_shift=True)
    if torch.allclose(a, b):
        fail(cls, "text conditioning", "changing the text does not change the output")


def check_determinism(cls: type[Part], config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    outs = []
    for _ in range(2):
        model = h.build(seed=123)
        model.eval()
        with torch.no_grad():
            outs.append(h.run(model))
    if not torch.equal(outs[0], outs[1]):
        fail(cls, "determinism", "two builds under the same seed give different outputs")


def check_state_roundtrip(cls: type[Part], config: Any = None, **kw: Any) -> None:
    """Weights (and extra JSON state) saved to safetensors and loaded into a fresh copy give the same outputs."""
    h = Harness(cls, config, **kw)
    a, b = h.build(seed=0), h.build(seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.safetensors"
        save_state(path, {"weights": a.state_dict(), "extra": a.extra_state_json()})
        state = load_state(path)
    b.load_extra_state_json(state["extra"])
    b.load_state_dict(state["weights"])
    a.eval()
    b.eval()
    with torch.no_grad():
        if not torch.allclose(h.run(a), h.run(b), atol=1e-6):
            fail(cls, "state save/load", "a copy loaded from safetensors gives different outputs")


def check_dtype_device(cls: type[Part], config: Any = None, **kw: Any) -> None:
    """`.to(float64)` (and `.to('cuda')` where there is a GPU) moves the whole part (one with neither parameters nor
    buffers, such as an objective, has nothing to move)."""
    h = Harness(cls, config, **kw)
    model = h.build().eval().to(torch.float64)
    if next(model.parameters(), None) is None and next(model.buffers(), None) is None:
        return
    try:
        with torch.no_grad():
            out = h.run(model)
    except (RuntimeError, TypeError) as exc:
        fail(cls, "dtype move", f"after .to(torch.float64) the forward pass fails: {one_line(exc)}")
    if out.dtype != torch.float64:
        fail(
            cls,
            "dtype move",
            f"after .to(torch.float64) the output is {out.dtype}: some tensor is not a registered parameter or buffer",
        )
    if torch.cuda.is_available():
        model = model.to(torch.float32).to("cuda")
        with torch.no_grad():
            out = h.run(model)
        if out.device.type != "cuda":
            fail(cls, "device move", f"after .to('cuda') the output is on {out.device}")


# --------------------------------------------------------------------------- other kinds
def check_dataset_contract(
    cls: type[Dataset], config: Any = None, splits: Sequence[str] = ("train", "test"), **_: Any
) -> None:
    config = config if config is not None else cls.Config()
    data = cls(config)
    size, channels = data.image_size, data.channels
    loaded = {}
    for split in splits:
        part = loaded[split] = data.load(split)
        if len(part) == 0:
            fail(cls, "non-empty splits", f"split '{split}' is empty")
        if part.images.dtype != torch.uint8 or tuple(part.images.shape[1:]) != (channels, size, size):
            fail(
                cls,
                "image shape",
                f"split '{split}' images are {part.images.dtype} {tuple(part.images.shape)}, "
                f"expected uint8 [N, {channels}, {size}, {size}]",
            )
        if not all(isinstance(c, str) and c.strip() for c in part.captions):
            fail(cls, "captions", f"split '{split}' has empty or non-string captions")
        image = part[0][0]
        if image.min() < -1 or image.max() > 1:
            fail(cls, "item range", "items must be images in [-1, 1]")
    again = cls(config).load(splits[0])
    if not torch.equal(again.images, loaded[splits[0]].images) or again.captions != loaded[splits[0]].captions:
        fail(cls, "determinism", f"loading split '{splits[0]}' twice gives different data")
    if len(splits) > 1 and torch.equal(loaded[splits[0]].images[:8], loaded[splits[1]].images[:8]):
        fail(cls, "fixed splits", f"splits '{splits[0]}' and '{splits[1]}' start with the same images")


def _registry(registry=None):
    from ..registry import get_registry

    return registry if registry is not None else get_registry()


def _kinds(registry=None) -> dict[str, type]:
    """The core's kinds and those the installed plugins add (``register_kinds``)."""
    return {**KINDS, **_registry(registry).kinds}


def check_pipeline_contract(cls: type[Pipeline], config: Any = None, **_: Any) -> None:
    for section, kind in cls.sections.items():
        if kind not in _kinds() or kind == "pipeline":
            fail(cls, "sections", f"section [{section}] names kind '{kind}', which is not a part kind")


NETWORK_CHECKS = [
    check_output_shape,
    check_output_range,
    check_gradients,
    check_conditioning,
    check_determinism,
    check_state_roundtrip,
    check_dtype_device,
]
#: The checks of the core's kinds that are not networks.
CHECKS: dict[str, list[Callable[..., None]]] = {
    "dataset": [check_dataset_contract],
    "pipeline": [check_pipeline_contract],
}


def checks_for(cls: type[Part], registry=None) -> list[Callable[..., None]]:
    """Every check that applies to `cls`: the network checks when its kind says how to feed it, the core's checks
    of its kind, and those its kind registered (``register_kinds(register, checks=...)``)."""
    own = CHECKS.get(cls.kind, []) + _registry(registry).kind_checks.get(cls.kind, [])
    return (NETWORK_CHECKS if is_network(cls) else []) + own


def check_part(cls: type[Part], config: Any = None, *, registry=None, **kwargs: Any) -> None:
    """Run every check that applies to `cls`'s kind (keyword arguments go to the harness: image_size, captions, ...),
    the core's kinds and those that plugins add alike (`checks_for`), with `registry` (default: the installed
    plugins) for the kinds it knows."""
    check_registration(cls, registry=registry)
    for check in checks_for(cls, registry):
        check(cls, config, **kwargs)
    check_schema_roundtrip(cls, config)
