"""Conformance kit: check a part against its kind's contract, from your own pytest run.

    from dalle_kit.testing import check_part

    def test_my_generator():
        check_part(MyGenerator)                      # every check that applies to its kind

    def test_my_generator_at_64px():
        check_part(MyGenerator, MyGenerator.Config(ngf=32), image_size=64)

Each check is also a function of its own (``check_output_shape(MyGenerator)``, ...); each raises
`ConformanceError` (an AssertionError) whose message names the part, the check and what was
expected. The built-in parts are tested with this same kit.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w
import torch

from .checkpoint import load_state, save_state
from .errors import RecipeError
from .parts import KINDS, Dataset, Discriminator, Generator, Loss, Part, Pipeline, TextEncoder
from .schema import structure, unstructure

CAPTIONS = ["a red circle", "a small blue square in the top left", "a photo of a cat", "a large green triangle"]
CONTEXT = {"text_dim": 16, "image_size": 32, "channels": 3}


class ConformanceError(AssertionError):
    """A part breaks its kind's contract."""


def _fail(cls: type, check: str, message: str):
    raise ConformanceError(f"{cls.kind} '{cls.name or cls.__name__}' fails {check}: {message}")


def _seeded(fn: Callable[[], Any], seed: int):
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return fn()
    finally:
        torch.set_rng_state(state)


class Harness:
    """How to build a neural part of some kind and feed it a fixed batch."""

    def __init__(self, cls: type, config: Any = None, captions: Sequence[str] = CAPTIONS, **context: Any):
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
            return self.cls(self.config, **self.context)

        return _seeded(make, seed)

    def inputs(self, model, text_shift: bool = False) -> tuple:
        """A fixed batch for `model` (in its dtype); `text_shift` gives the same batch with other texts."""
        if issubclass(self.cls, TextEncoder):
            caps = self.captions[1:] + self.captions[:1] if text_shift else self.captions
            return (caps,)
        g = torch.Generator().manual_seed(1)
        n, c = len(self.captions), self.context
        text = torch.randn(n, c["text_dim"], generator=g)
        if text_shift:
            text = -torch.roll(text, 1, dims=0)
        if issubclass(self.cls, Generator):
            first = torch.randn(n, model.latent_dim, generator=g)
        else:
            first = torch.rand(n, c["channels"], c["image_size"], c["image_size"], generator=g) * 2 - 1
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return first.to(device, dtype), text.to(device, dtype)

    def run(self, model, text_shift: bool = False) -> torch.Tensor:
        args = self.inputs(model, text_shift)
        return model.encode(*args) if issubclass(self.cls, TextEncoder) else model(*args)

    def expected_shape(self, model) -> tuple[int, ...]:
        n, c = len(self.captions), self.context
        if issubclass(self.cls, Generator):
            return (n, c["channels"], c["image_size"], c["image_size"])
        if issubclass(self.cls, Discriminator):
            return (n,)
        return (n, model.dim)


# --------------------------------------------------------------------------- checks for every kind
def check_registration(cls: type, config: Any = None, registry=None, **_: Any) -> None:
    """A subclass of its kind's base, with a `name` and an attrs `Config` that constructs."""
    kinds = _kinds(registry)
    if not (isinstance(cls, type) and issubclass(cls, Part) and cls.kind in kinds and issubclass(cls, kinds[cls.kind])):
        raise ConformanceError(f"{cls!r} is not a subclass of one of the installed part kinds ({', '.join(kinds)})")
    if not cls.name:
        _fail(cls, "registration", "class attribute `name` is empty")
    if not attrs.has(cls.Config):
        _fail(cls, "registration", "`Config` is not an attrs class")


def check_schema_roundtrip(cls: type, config: Any = None, **_: Any) -> None:
    """config -> TOML -> config gives an equal config."""
    config = config if config is not None else cls.Config()
    try:
        back = structure(cls.Config, tomllib.loads(tomli_w.dumps(unstructure(config))), source="<round-trip>", section=cls.kind)
    except (RecipeError, TypeError, ValueError) as exc:
        _fail(cls, "schema round-trip", f"the config does not survive TOML: {exc}")
    if back != config:
        _fail(cls, "schema round-trip", f"{config!r} came back from TOML as {back!r}")


# --------------------------------------------------------------------------- checks for neural parts
def check_output_shape(cls: type, config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    model = h.build()
    if issubclass(cls, Generator) and (not isinstance(getattr(model, "latent_dim", None), int) or model.latent_dim <= 0):
        _fail(cls, "output shape", f"latent_dim must be a positive int, got {getattr(model, 'latent_dim', None)!r}")
    if issubclass(cls, TextEncoder) and (not isinstance(getattr(model, "dim", None), int) or model.dim < 0):
        _fail(cls, "output shape", f"dim must be an int >= 0 (0: no conditioning), got {getattr(model, 'dim', None)!r}")
    out = h.run(model)
    if tuple(out.shape) != h.expected_shape(model):
        _fail(cls, "output shape", f"got {tuple(out.shape)}, expected {h.expected_shape(model)}")


def check_output_range(cls: type, config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    out = h.run(h.build())
    if out.dtype != torch.float32:
        _fail(cls, "output range", f"output dtype is {out.dtype}, expected float32")
    if not torch.isfinite(out).all():
        _fail(cls, "output range", "output has NaN or infinite values")
    if issubclass(cls, Generator) and (out.min() < -1 - 1e-5 or out.max() > 1 + 1e-5):
        _fail(cls, "output range", f"images must lie in [-1, 1], got [{out.min().item():.3f}, {out.max().item():.3f}]")


def check_gradients(cls: type, config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    model = h.build()
    if issubclass(cls, TextEncoder) and not model.trainable:
        return  # a frozen encoder owes no gradients
    args = h.inputs(model)
    if issubclass(cls, Discriminator):
        args[0].requires_grad_(True)
    out = model.encode(*args) if issubclass(cls, TextEncoder) else model(*args)
    if not out.requires_grad:
        _fail(cls, "gradients", "the output is detached from the parameters (no grad_fn)")
    out.float().square().mean().backward()
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
        _fail(cls, "gradients", "no parameter receives a gradient from the output")
    if issubclass(cls, Discriminator) and (args[0].grad is None or args[0].grad.abs().sum() == 0):
        _fail(cls, "gradients", "no gradient reaches the input images (needed by the generator and by penalties)")


def check_conditioning(cls: type, config: Any = None, **kw: Any) -> None:
    """Different texts give different outputs (for an encoder: different captions, different vectors; an encoder of
    dim 0 declares no conditioning and is exempt)."""
    h = Harness(cls, config, **kw)
    model = h.build()
    if issubclass(cls, TextEncoder) and model.dim == 0:  # declared unconditional: no vector to differ
        return
    model.eval()
    with torch.no_grad():
        a, b = h.run(model), h.run(model, text_shift=True)
    if torch.allclose(a, b):
        _fail(cls, "text conditioning", "changing the text does not change the output")


def check_determinism(cls: type, config: Any = None, **kw: Any) -> None:
    h = Harness(cls, config, **kw)
    outs = []
    for _ in range(2):
        model = h.build(seed=123)
        model.eval()
        with torch.no_grad():
            outs.append(h.run(model))
    if not torch.equal(outs[0], outs[1]):
        _fail(cls, "determinism", "two builds under the same seed give different outputs")


def check_state_roundtrip(cls: type, config: Any = None, **kw: Any) -> None:
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
            _fail(cls, "state save/load", "a copy loaded from safetensors gives different outputs")


def check_dtype_device(cls: type, config: Any = None, **kw: Any) -> None:
    """`.to(float64)` (and `.to('cuda')` where there is a GPU) moves the whole part."""
    h = Harness(cls, config, **kw)
    model = h.build().eval().to(torch.float64)
    try:
        with torch.no_grad():
            out = h.run(model)
    except (RuntimeError, TypeError) as exc:
        _fail(cls, "dtype move", f"after .to(torch.float64) the forward pass fails: {str(exc).splitlines()[0]}")
    if out.dtype != torch.float64:
        _fail(cls, "dtype move", f"after .to(torch.float64) the output is {out.dtype}: some tensor is not a registered parameter or buffer")
    if torch.cuda.is_available():
        model = model.to(torch.float32).to("cuda")
        with torch.no_grad():
            out = h.run(model)
        if out.device.type != "cuda":
            _fail(cls, "device move", f"after .to('cuda') the output is on {out.device}")


# --------------------------------------------------------------------------- other kinds
def check_loss_contract(cls: type[Loss], config: Any = None, **_: Any) -> None:
    loss = cls(config if config is not None else cls.Config())
    high, low = torch.full((8,), 3.0), torch.full((8,), -3.0)
    real = torch.linspace(-1, 1, 8)  # what D says of the batch's real images, for a loss with needs_real_logits

    def generator_loss(fake):
        return loss.generator_loss(fake, real) if cls.needs_real_logits else loss.generator_loss(fake)

    for name, value in [("discriminator_loss", loss.discriminator_loss(high, low)), ("generator_loss", generator_loss(low)),
                        ("discriminator_loss with matching_aware (twice as many fake logits)",
                         loss.discriminator_loss(high, torch.cat([low, low])))]:
        if not isinstance(value, torch.Tensor) or value.dim() != 0 or not torch.isfinite(value):
            _fail(cls, "output shape", f"{name} must return a finite scalar tensor, got {value!r}")
    if not loss.discriminator_loss(high, low) < loss.discriminator_loss(low, high):
        _fail(cls, "direction", "discriminator_loss must be lower when real logits are high and fake logits low")
    if not generator_loss(high) < generator_loss(low):
        _fail(cls, "direction", "generator_loss must be lower when the discriminator rates fakes as real")
    logits = torch.zeros(8, requires_grad=True)
    generator_loss(logits).backward()
    if logits.grad is None or logits.grad.abs().sum() == 0:
        _fail(cls, "gradients", "generator_loss gives no gradient to the logits")
    judge = _LinearJudge()
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(4, 3, 8, 8, generator=g) * 2 - 1 for _ in range(2))
    penalty = loss.penalty(judge, real, fake, torch.randn(4, 16, generator=g))
    if penalty is not None:
        if not isinstance(penalty, torch.Tensor) or penalty.dim() != 0 or not torch.isfinite(penalty) or penalty < 0:
            _fail(cls, "penalty", f"penalty must be None or a finite, non-negative scalar tensor, got {penalty!r}")
        if penalty.requires_grad:
            penalty.backward()
        if judge.weight.grad is None or judge.weight.grad.abs().sum() == 0:
            _fail(cls, "penalty", "the penalty gives no gradient to the discriminator's parameters")


class _LinearJudge(Discriminator):
    """A linear discriminator for checking loss penalties: logits = <w, x> + <v, t>."""

    name = "linear-judge"

    def __init__(self):
        super().__init__(None, text_dim=16, image_size=8, channels=3)
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 3 * 8 * 8))
        self.text_weight = torch.nn.Parameter(torch.ones(16) / 4)

    def forward(self, images, text):
        return images.flatten(1) @ self.weight + text @ self.text_weight


def check_dataset_contract(cls: type[Dataset], config: Any = None, splits: Sequence[str] = ("train", "test"), **_: Any) -> None:
    config = config if config is not None else cls.Config()
    data = cls(config)
    size, channels = data.image_size, data.channels
    loaded = {}
    for split in splits:
        part = loaded[split] = data.load(split)
        if len(part) == 0:
            _fail(cls, "non-empty splits", f"split '{split}' is empty")
        if part.images.dtype != torch.uint8 or tuple(part.images.shape[1:]) != (channels, size, size):
            _fail(cls, "image shape", f"split '{split}' images are {part.images.dtype} {tuple(part.images.shape)}, "
                  f"expected uint8 [N, {channels}, {size}, {size}]")
        if not all(isinstance(c, str) and c.strip() for c in part.captions):
            _fail(cls, "captions", f"split '{split}' has empty or non-string captions")
        image, _ = part[0]
        if image.min() < -1 or image.max() > 1:
            _fail(cls, "item range", "items must be images in [-1, 1]")
    again = cls(config).load(splits[0])
    if not torch.equal(again.images, loaded[splits[0]].images) or again.captions != loaded[splits[0]].captions:
        _fail(cls, "determinism", f"loading split '{splits[0]}' twice gives different data")
    if len(splits) > 1 and torch.equal(loaded[splits[0]].images[:8], loaded[splits[1]].images[:8]):
        _fail(cls, "fixed splits", f"splits '{splits[0]}' and '{splits[1]}' start with the same images")


def _registry(registry=None):
    from .registry import get_registry

    return registry if registry is not None else get_registry()


def _kinds(registry=None) -> dict[str, type]:
    """The core's kinds and those the installed plugins add (``register_kinds``)."""
    return {**KINDS, **_registry(registry).kinds}


def check_pipeline_contract(cls: type[Pipeline], config: Any = None, **_: Any) -> None:
    for section, kind in cls.sections.items():
        if kind not in _kinds() or kind == "pipeline":
            _fail(cls, "sections", f"section [{section}] names kind '{kind}', which is not a part kind")


NEURAL_CHECKS = [check_output_shape, check_output_range, check_gradients, check_conditioning, check_determinism,
                 check_state_roundtrip, check_dtype_device]
CHECKS: dict[str, list[Callable[..., None]]] = {
    "generator": NEURAL_CHECKS,
    "discriminator": NEURAL_CHECKS,
    "text_encoder": NEURAL_CHECKS,
    "loss": [check_loss_contract],
    "dataset": [check_dataset_contract],
    "pipeline": [check_pipeline_contract],
    "metric": [],
}


def check_part(cls: type, config: Any = None, *, registry=None, **kwargs: Any) -> None:
    """Run every check that applies to `cls`'s kind (keyword arguments go to the harness: image_size, captions, ...).
    For a kind that a plugin adds, its own checks (``register_kinds``) from `registry` (default: the installed
    plugins)."""
    check_registration(cls, registry=registry)
    checks = CHECKS[cls.kind] if cls.kind in CHECKS else _registry(registry).kind_checks.get(cls.kind, [])
    for check in checks:
        check(cls, config, **kwargs)
    check_schema_roundtrip(cls, config)
