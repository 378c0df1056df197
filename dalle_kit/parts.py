"""The contracts of the parts. Implementations live in plugins; the core never names one.

Every part class carries two class attributes: ``name`` (unique within its kind) and ``Config``
(an ``attrs`` class whose fields are the part's recipe parameters, see `dalle_kit.schema`).
Parts are constructed as ``Part(config, **context)`` where the context keywords depend on the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import attrs
import torch
from torch import Tensor, nn

from .schema import param


@attrs.frozen
class NoConfig:
    """A part without parameters."""


class Part:
    """Mixin shared by every kind: a registered name, a kind and a typed config.

    ``name`` is unique within its kind (the recipe's ``name = "..."``). ``Config`` is an attrs class whose
    fields are the keys of the part's recipe table, declared with ``dalle_kit.param(default, "doc")`` (and
    attrs validators); each default must fit its annotation, which registration checks. The part is built
    with an instance of it, plus the context its kind documents.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    #: The context keywords (of text_dim, image_size, channels) parts of this kind are built with.
    build_context: ClassVar[tuple[str, ...]] = ()
    #: For network kinds: the range every output value must lie in (None: any finite value).
    output_range: ClassVar[tuple[float, float] | None] = None
    #: For network kinds: the positions of `example_inputs` that must receive gradients (a discriminator's images).
    grad_inputs: ClassVar[tuple[int, ...]] = ()
    #: For network kinds: whether the output depends on the text (checked: other texts give another output); False
    #: for a kind that reads no text, such as an objective comparing images.
    conditioned: ClassVar[bool] = True

    if TYPE_CHECKING:  # pragma: no cover
        # How every part is built (each kind's base defines the constructor it documents); for the type checker only.
        def __init__(self, config: Any, **context: Any) -> None: ...

    @classmethod
    def example_inputs(
        cls, part: Any, *, n: int, context: dict[str, Any], rng: torch.Generator, text_shift: bool = False
    ) -> tuple[Any, ...] | None:
        """For network kinds: a batch of `n` inputs for ``part(*inputs)`` (``text_shift``: the same batch with other
        texts), so that `dalle_kit.tools.testing` checks any kind, a plugin's too. None: the kind is not a network."""
        return None

    @classmethod
    def expected_shape(cls, part: Any, *, n: int, context: dict[str, Any]) -> tuple[int, ...] | None:
        """For network kinds: the shape ``part(*example_inputs)`` must have (None: not checked)."""
        return None

    @classmethod
    def pin(cls, config: Any) -> Any:
        """`config` with references that can change meaning replaced by what they mean now (a run-name
        prefix by the run directory it resolves to). Called when a run starts, so that its resolved recipe
        names exactly what it used and a resume or a later `sample` rebuilds the same part."""
        return config

    def extra_state_json(self) -> dict[str, Any]:
        """JSON-able state that is not a tensor (a vocabulary); saved beside the weights."""
        return {}

    def load_extra_state_json(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state_json` returned, before the weights are loaded."""


class TextEncoder(nn.Module, Part):
    """Turns captions into vectors: ``encode(list[str]) -> Tensor[B, dim]``.

    Context: none. A trainable encoder is optimised by the pipeline (with one of its networks,
    or by its own objective); a frozen one has no parameters that require grad. ``dim`` 0 means no
    conditioning: the parts built beside it are unconditional.
    """

    kind = "text_encoder"
    dim: int

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def fit(self, captions: Sequence[str]) -> None:
        """Learn what needs the corpus (a vocabulary) from the training captions. Called once, before training."""

    @classmethod
    def unknown_words(cls, saved: dict[str, Any] | None, prompts: Sequence[str]) -> list[str]:
        """The words of `prompts` that an encoder with this saved state (`extra_state_json`) never learned, so that
        `dalle-kit sample` can warn about them; [] for encoders that read any word."""
        return []

    def encode(self, captions: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def forward(self, captions: Sequence[str]) -> Tensor:
        return self.encode(list(captions))

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    @classmethod
    def example_inputs(
        cls, part: Any, *, n: int, context: dict[str, Any], rng: torch.Generator, text_shift: bool = False
    ) -> tuple[Any, ...]:
        captions = list(context["captions"])[:n]
        return (captions[1:] + captions[:1] if text_shift else captions,)

    @classmethod
    def expected_shape(cls, part: Any, *, n: int, context: dict[str, Any]) -> tuple[int, ...]:
        return (n, part.dim)

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


class Metric(Part):
    """Scores generated images: ``compute(evaluation) -> MetricResult`` (see `dalle_kit.evaluation`).

    The `Evaluation` gives the generated images and their prompts, the reference split, the dataset,
    the run's critic (if its pipeline has one) and a content-keyed cache; the `MetricResult` holds the numbers
    (name -> finite float) and the `Protocol` that produced them (n generated, n reference, reference
    split, extractor, weights hash, seed). Context: none.
    """

    kind = "metric"

    def __init__(self, config: Any) -> None:
        self.config = config

    def check(self, evaluation: Any) -> None:
        """Raise `dalle_kit.UserError` (one line: what is missing, where to put it) if the metric cannot run here.

        Called for every metric before any image is generated, so a missing weights file stops the
        evaluation at once and no number is produced.
        """

    def compute(self, evaluation: Any) -> Any:
        raise NotImplementedError


class ImageCaptions(torch.utils.data.Dataset[tuple[Tensor, str]]):
    """An in-memory split: uint8 images [N, C, H, W] with one caption each (and optional labels).

    Items are ``(image in [-1, 1], caption)``; `batch(indices)` is the fast path pipelines use.
    ``attributes`` maps a name (for example "colour") to an int64 tensor [N] of class indices, and
    ``attribute_names`` maps it to the class names, for metrics that need the ground truth.
    """

    def __init__(
        self,
        images: Tensor,
        captions: Sequence[str],
        attributes: dict[str, Tensor] | None = None,
        attribute_names: Mapping[str, Sequence[str]] | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(captions) != len(images):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        self.images, self.captions = images, list(captions)
        self.attributes = attributes or {}
        self.attribute_names = {k: list(v) for k, v in (attribute_names or {}).items()}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        return to_float_images(self.images[i]), self.captions[i]

    def batch(self, indices: Tensor) -> tuple[Tensor, list[str]]:
        return to_float_images(self.images[indices]), [self.captions[int(i)] for i in indices]


def to_float_images(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8_images(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return to_unit255_images(images).round().to(torch.uint8)


def to_unit255_images(images: Tensor) -> Tensor:
    """float [-1, 1] -> float32 [0, 255] (clamped, not rounded)."""
    return images.detach().float().add(1.0).mul(127.5).clamp(0, 255)


class Dataset(Part):
    """A captioned image source with fixed splits: ``load(split) -> ImageCaptions``.

    Context: none. Declares ``image_size`` (the side of the square images the recipe asked for) and
    ``channels`` (3, or 1 for grey data such as MNIST: metrics repeat it to RGB); splits are at least
    "train" and "test", and ``load`` gives the same data every time (uint8 images [N, C, size, size],
    one caption each). Optional, used by the metrics that read captions back: a ``parse_caption(text)
    -> {attribute: value}`` method (or a function of the dataset's module) and, on the loaded split,
    ``ImageCaptions.attributes`` / ``attribute_names`` with the ground truth (text-alignment,
    class-accuracy, cas, intra-fid). Sample prompts are the recipe's ``[sample] prompts``.
    """

    kind = "dataset"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: Metric names that suit this data, the most telling first: what `dalle-kit eval` and the report suggest
    #: when a recipe lists none.
    suggested_metrics: ClassVar[tuple[str, ...]] = ("fid",)

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def channels(self) -> int:
        return 3

    @property
    def native_size(self) -> int | None:
        """The side of the images as stored, when every image has the same (MNIST: 28); None otherwise. Protocols
        that score images unpadded and unresized (``[eval.fid] protocol = "lucic2018"``) need ``image_size`` equal to it."""
        return None

    def check(self) -> None:
        """Raise a one-line `dalle_kit.UserError` if the data cannot be had here (files missing, nowhere to
        download from): what is missing, where it was looked for, the command or path that fixes it.

        Called by `dalle-kit run` and `dalle-kit recipe check` before any run directory is made; keep it
        cheap (look for files, do not decode them). The default checks nothing.
        """

    def load(self, split: str) -> ImageCaptions:
        raise NotImplementedError


def _threads(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, int) and value < 1:
        raise ValueError(f"'{attribute.name}' must be 'cpus', 'auto', 'once', 'adaptive' or a number >= 1, got {value}")


@attrs.frozen
class TrainConfig:
    """The ``[train]`` settings every pipeline has (the trainer reads them): subclass it for a pipeline's
    ``Config`` and add fields; redeclare a field to change its default or its doc."""

    steps: int = param(1000, "training iterations", validator=attrs.validators.gt(0))
    batch_size: int = param(64, "images per step", validator=attrs.validators.gt(0))
    log_every: int = param(25, "write losses to metrics.jsonl every this many steps", validator=attrs.validators.gt(0))
    checkpoint_every: int = param(500, "save a checkpoint every this many steps", validator=attrs.validators.gt(0))
    threads: int | Literal["cpus", "auto", "once", "adaptive"] = param(
        "cpus",
        "CPU threads for torch: 'cpus' (the default) one per CPU this process may use, whatever the load, so the "
        "same recipe and seed give the same weights on the same machine; 'auto' takes the CPUs other processes "
        "leave free and looks again every 15 s (shares a busy machine better; bit-reproducible only while the "
        "count stays, each change logged); 'once' chooses that way once and keeps the count; 'adaptive' is "
        "'auto'; or a number. A resumed run keeps its saved count; an OMP_NUM_THREADS in the environment wins",
        validator=_threads,
    )
    sync_batchnorm: bool = param(
        False,
        "in a multi-process run (torchrun, run --nproc), BatchNorm statistics over the "
        "global batch instead of each process's (SyncBatchNorm; CUDA only)",
    )


class PartSource(Protocol):
    """``run.parts``: builds the parts the recipe names (implemented by `dalle_kit.building.PartBuilder`)."""

    def build(self, section: str, **context: Any) -> Any: ...
    def dataset(self, section: str = "data") -> Dataset: ...
    def text_encoder(self, saved: dict[str, Any] | None, captions: Sequence[str] | None = None) -> TextEncoder: ...
    def parallel(self, module: nn.Module) -> nn.Module: ...


class PipelineRun(Protocol):
    """What `Pipeline.setup` (and the training events) receive as ``run``: the resolved recipe, the device, the parts,
    named random streams and the run's files (implemented by `dalle_kit.run.Run`)."""

    recipe: Any
    device: torch.device
    registry: Any
    quiet: bool

    @property
    def dir(self) -> Path: ...
    @property
    def parts(self) -> PartSource: ...
    @property
    def files(self) -> Any: ...
    @property
    def checkpoints(self) -> Any: ...
    def rng(self, name: str) -> torch.Generator: ...
    def log(self, step: int, kind: str = "train", **values: Any) -> dict[str, Any]: ...
    def say(self, text: str) -> None: ...


@attrs.define
class Training:
    """What a pipeline's ``setup(run, state)`` hands the trainer.

    ``modules`` and ``optimizers`` are saved in every checkpoint under their keys and restored on resume, with
    every random stream the pipeline took from ``run.rng(name)`` (plugins may add modules when they are built, as
    EMA adds ``<name>_ema``). ``train_step(done)`` runs one iteration and returns the values to check for
    finiteness, show and log (floats). ``draw`` turns the modules to sample with into ``(prompts, rng) -> images
    in [-1, 1]`` (None: the pipeline draws no images). ``extra_state`` returns JSON-able state saved under
    ``extra`` (a vocabulary); ``log_values(step)`` adds costly values on logging steps only (a held-out error);
    ``before_save(step, state)`` runs after the finiteness check and before the checkpoint is written (an export
    beside it); ``divergence_fix`` is the advice printed when the losses or weights stop being finite.
    """

    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    train_step: Callable[[int], dict[str, float]]
    draw: Callable[[dict[str, torch.nn.Module]], Callable[..., Tensor]] | None = None
    extra_state: Callable[[], dict[str, Any]] | None = None
    log_values: Callable[[int], dict[str, Any]] | None = None
    before_save: Callable[[int, dict[str, Any]], None] | None = None
    divergence_fix: str = "lower [train] lr"


class TrainerView(Protocol):
    """What the training events receive as ``trainer`` (implemented by `dalle_kit.trainer.Trainer`)."""

    run: PipelineRun
    pipeline: Pipeline
    config: Any
    step: int
    training: Training | None
    sampling_modules: dict[str, nn.Module]
    threads: Any

    @property
    def draws_images(self) -> bool: ...
    def checkpoint(self) -> None: ...
    def drawing(self) -> AbstractContextManager[Callable[..., Tensor]]: ...
    def request_stop(self, reason: str) -> None: ...
    def evaluate_due(self, step: int) -> bool: ...


class Pipeline(Part):
    """A training procedure that wires parts. ``Config`` is the schema of the recipe's ``[train]`` table: a
    `TrainConfig` subclass (registration refuses a Config without its fields).

    ``sections`` maps each recipe table the pipeline needs to the kind of part it names. A pipeline
    supplies ``setup(run, state) -> dalle_kit.Training`` (its networks, optimizers, one training step and how
    to draw) and the core `Trainer` runs the loop. Sampling and evaluation build the same `Training` from the
    run's newest checkpoint (`Trainer.restore`), so a pipeline has one build path. A pipeline with a critic may
    also offer ``critic(run) -> ((images, captions) -> logits, label)`` (used by d-roc-auc).
    """

    kind = "pipeline"
    Config: ClassVar[type] = TrainConfig
    sections: ClassVar[dict[str, str]] = {}
    #: The module in ``Training.modules`` whose average the built-in EMA keeps when the [train] table has
    #: ``ema`` > 0 (saved as ``<name>_ema``, used for samples and metrics); None: no EMA.
    ema_module: ClassVar[str | None] = None
    #: Whether the pipeline honours the recipe's ``init_from`` and ``finetune`` (see `dalle_kit_plugins.common.finetune`).
    finetunes: ClassVar[bool] = False
    #: Whether the pipeline's runs draw images (``sampler``): metrics of generated images need it, so ``[eval] metrics``
    #: on a pipeline that draws none (``clip-pretrain``) is refused when the recipe is read.
    draws_images: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        self.config = config

    def setup(self, run: PipelineRun, state: dict[str, Any] | None) -> Training:
        """Build the networks (from ``run.parts``; a fitted text encoder's vocabulary restored from
        ``state["extra"]`` when `state`, the run's checkpoint, is given: the trainer then loads the weights,
        optimizers and random streams) and return them with the training step and how to draw."""
        raise NotImplementedError(f"pipeline '{self.name}' defines no setup()")

    def check(self, image_size: int, channels: int, text_dim: int | None) -> None:
        """Raise `UserError` (one line, naming the recipe key and the fix) when the models this pipeline builds
        itself cannot take the dataset's images; called by ``run`` and ``recipe check`` before any run directory
        exists. The parts the recipe names are checked by building them; this covers what the pipeline adds."""

    def sampling(self) -> str:
        """How this pipeline's settings draw images, in a few words for the protocol of every score (e.g. "DDIM, 25
        steps, guidance 3"); "" for plain draws from the model."""
        return ""

    def schedule_depends_on_steps(self) -> bool:
        """Whether anything in training (a learning-rate decay, a warmup-cosine) is a function of
        ``[train] steps``. A run whose schedule is cannot be trained for longer by ``--resume --set
        train.steps=N`` (the rest of the schedule would differ from a run made with N steps)."""
        return False


#: The kinds every family shares; a family adds its own through ``register_kinds``.
KINDS: dict[str, type[Part]] = {
    "text_encoder": TextEncoder,
    "metric": Metric,
    "dataset": Dataset,
    "pipeline": Pipeline,
}
