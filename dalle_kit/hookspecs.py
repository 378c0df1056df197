"""The hooks a plugin may implement: one ``register_*`` hook per kind of part, and the training events.

Each registration hook receives ``register``, a function to call once per part class::

    @dalle_kit.hookimpl
    def register_text_encoders(register):
        register(MyTextEncoder)

The class must subclass its kind's base and carry ``name`` and ``Config``. The core's kinds are the ones every
family shares (text encoders, datasets, metrics, pipelines); a family brings its own kinds through
``register_kinds``, each with its registration hook (the GAN family's ``register_generators``,
``register_discriminators`` and ``register_losses``), exactly as a third party does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .markers import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Dataset, Metric, Part, Pipeline, PipelineRun, TextEncoder, TrainerView
    from .scores import MetricResult


class KindRegister(Protocol):
    """The ``register`` that `register_kinds` receives."""

    def __call__(
        self, base: type[Part], checks: Sequence[Callable[..., None]] = (), hook: str | None = None
    ) -> None: ...


@hookspec
def register_text_encoders(register: Callable[[type[TextEncoder]], None]) -> None:
    """Register `dalle_kit.TextEncoder` subclasses: captions -> vectors."""


@hookspec
def register_metrics(register: Callable[[type[Metric]], None]) -> None:
    """Register `dalle_kit.Metric` subclasses: scores of generated images."""


@hookspec
def register_datasets(register: Callable[[type[Dataset]], None]) -> None:
    """Register `dalle_kit.Dataset` subclasses: captioned images with fixed splits."""


@hookspec
def register_pipelines(register: Callable[[type[Pipeline]], None]) -> None:
    """Register `dalle_kit.Pipeline` subclasses: training procedures that wire parts."""


@hookspec
def register_kinds(register: KindRegister) -> None:
    """Register a new kind of part: ``register(Base, checks=[...], hook="register_<parts>")``, so that a new model
    family needs no core change.

    ``Base`` subclasses `dalle_kit.Part` (and `torch.nn.Module` for a network) and sets ``kind = "<name>"``; its
    docstring is the kind's contract. Its parts register through `register_parts`, or through ``hook`` when given
    (a registration hook of the kind's own, such as the GAN family's ``register_generators``); a pipeline names the
    kind in its ``sections`` (the recipe table); they are built as ``cls(config, **context)`` with the keys that
    ``Base.build_context`` lists among ``text_dim``, ``image_size`` and ``channels`` (``recipe check`` builds them
    once, before any run directory). A network kind describes its inputs (``Base.example_inputs`` and
    ``expected_shape``, `dalle_kit.Part`) and `dalle_kit.tools.testing.check_part` runs the network checks on its parts;
    ``checks`` are conformance functions ``check(cls, config, **kw)`` of its own, run beside them."""


@hookspec
def register_parts(register: Callable[[type[Part]], None]) -> None:
    """Register parts of any kind, the kind read from the class's ``kind`` (``register(MyPart)``): the way to
    register parts of a kind that a plugin added with `register_kinds`."""


@hookspec
def register_recipes(register: Callable[[str, str | Path], None]) -> None:
    """Register recipes shipped with a plugin: ``register(name, path_to_toml)``."""


@hookspec
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare a recipe table ``[hooks.<name>]`` that a plugin's training events read: ``register(name, Config)``,
    ``Config`` an attrs class whose fields are made with `dalle_kit.param`. The table is validated like a part's
    settings when a recipe is read (a misspelled key is one line naming it), written with every default into the
    run's recipe.toml, and read as ``trainer.run.recipe.hooks[name]`` (a ``Config``; its defaults when the recipe
    has no such table)."""


# ---------------------------------------------------------------------------- training events
# Called by `dalle_kit.trainer.Trainer` for every pipeline built on it, in this order. ``trainer`` gives
# ``run`` (the recipe and the run's services), ``pipeline``, ``config`` (the recipe's [train] table), ``step``,
# ``training`` (the pipeline's modules and optimizers), ``sampling_modules``, ``checkpoint()``,
# ``drawing()`` and ``request_stop(reason)``. EMA, sample grids and mid-run evaluation are built-in
# plugins on these events.


@hookspec
def modules_built(trainer: TrainerView) -> None:
    """After the pipeline's setup built its modules and before a checkpoint is loaded into them: when training
    starts, and when a trained run is restored to sample, evaluate or judge (`Trainer.restore`). Add modules to
    ``trainer.training.modules`` (saved and restored with the run, as EMA's average is) and put the ones images
    should be drawn with in ``trainer.sampling_modules``."""


@hookspec
def train_start(trainer: TrainerView) -> None:
    """Once, after `modules_built` and before the checkpoint is restored: prepare a plugin's own state."""


@hookspec
def train_step_end(trainer: TrainerView, step: int, values: dict[str, float]) -> None:
    """After each training step (``step`` counts finished steps from 1; ``values`` are its finite losses),
    before logging and checkpointing: update averages, or call ``trainer.request_stop(reason)``."""


@hookspec
def train_checkpoint(trainer: TrainerView, step: int) -> None:
    """After the checkpoint of ``step`` is written (``trainer.run.checkpoints.folder``)."""


@hookspec
def train_step_saved(trainer: TrainerView, step: int) -> None:
    """After the step is logged and any checkpoint is written: draw sample grids, evaluate. Wrap drawing in
    ``with trainer.drawing() as draw:`` so that it never changes the training's random draws or modes."""


@hookspec
def train_end(trainer: TrainerView, step: int, finished: bool) -> None:
    """After the loop: ``finished`` is false when it stopped early (a signal, ``--stop-at``, a request)."""


# ---------------------------------------------------------------------------- run events
# Called by the core around a run's training (not by the trainer): ``run`` is the `PipelineRun` (recipe, registry,
# services). The built-in ``midrun-eval`` plugin checks the recipe's metrics and makes the final evaluation here.


@hookspec
def check_run(run: PipelineRun) -> None:
    """Before a new run's directory is made (``run.dir`` names where it will go; nothing is written yet): raise a
    `dalle_kit.UserError` for what cannot work here (a metric's weights missing), so the user hears of it in one
    line before any work."""


@hookspec
def run_trained(run: PipelineRun) -> None:
    """After a run has trained all its ``[train] steps`` (not when stopped early), in the process that writes it:
    evaluate it. A plugin that scores it puts its `MetricResult` by metric name into ``run.results``, which the
    CLI prints."""


@hookspec
def run_evaluated(run: PipelineRun, step: int, results: dict[str, MetricResult]) -> None:
    """After metrics are computed and logged for ``run`` (mid-run, at the end of training, or by ``dalle-kit
    eval``): ``results`` maps each metric's name to its `dalle_kit.evaluation.MetricResult` (values, protocol)."""
