"""Evaluating a run: the context handed to metrics, their results with the protocol, and `evaluate_run`.

A metric (`dalle_kit.Metric`) receives an `Evaluation` and returns a `MetricResult`: its numbers
plus the `Protocol` that produced them (images generated and used as reference, the reference
split, the feature extractor and a hash of its weights, the seed). `evaluate_run` generates the
samples once with the run's pipeline, runs each metric on them and writes one ``kind = "eval"``
row per metric to the run's metrics.jsonl.

What an `Evaluation` offers (everything is computed on first use and shared by the metrics):

- ``generated``: uint8 images [N, C, H, W], drawn for ``prompts`` with ``torch.Generator(seed)``
- ``prompts``: N captions drawn (seeded) from the reference split, so prompts are in-distribution
- ``reference``: the first ``n_reference`` images of the dataset's reference split, with captions
- ``dataset``: the dataset part (``dataset.load("train")`` for metrics that fit something)
- ``critic()``: the run's critic as ``(images in [-1, 1], captions) -> logits``, if its pipeline offers
  ``critic(run) -> (judge, label)``
- ``cache``: a `dalle_kit.cache.ContentCache` factory for content-keyed results; ``shared``: a dict
  metrics may use to share work within this evaluation (one feature pass for several scores)
- ``progress(total, desc, unit)``: a progress bar on stderr for any step that takes more than a few seconds
  (training a probe, extracting features); silent when the evaluation is ``quiet``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import torch

from . import hints, progress
from .cache import ContentCache, default_root, file_digest
from .errors import RecipeError, UserError
from .parts import ImageCaptions, to_unit255_images
from .scores import MetricResult, Protocol
from . import trainer

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Dataset, Metric
    from .run import Run

#: Images generated per call of the pipeline's sampler.
GENERATE_BATCH = 250
_SAME = object()  # "the evaluation's own reference split"


class Evaluation:
    """The context a metric computes from. Build it from a run with `from_run`, or directly in tests."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_samples: int,
        seed: int = 0,
        reference_split: str = "test",
        n_reference: int | None = None,
        sampler: Callable[[], Callable] | None = None,
        generated: torch.Tensor | None = None,
        prompts: Sequence[str] | None = None,
        critic: Callable[[], tuple[Callable, str, str]] | None = None,
        device: str | torch.device = "cpu",
        cache_root: str | Path | None = None,
        metric_names: Sequence[str] = (),
        quiet: bool = False,
        sampling: str = "",
    ):
        if num_samples < 1:
            raise UserError(f"num_samples must be at least 1, got {num_samples}")
        if generated is not None:
            if generated.dtype != torch.uint8 or generated.ndim != 4:
                raise ValueError(
                    f"generated images must be uint8 [N, C, H, W], got {generated.dtype} {tuple(generated.shape)}"
                )
            if prompts is None or len(prompts) != len(generated):
                raise ValueError("generated images need one prompt each")
            num_samples = len(generated)
        self.dataset = dataset
        self.sampling = sampling
        self.num_samples = num_samples
        self.seed = seed
        self.reference_split = reference_split
        self.device = torch.device(device)
        self.cache_root = Path(cache_root) if cache_root is not None else default_root()
        self.metric_names = list(metric_names)
        self.quiet = quiet
        self.shared: dict[Any, Any] = {}
        self._n_reference = n_reference
        self._sampler = sampler
        self._critic = critic
        self._generated = generated
        self._generated_float: torch.Tensor | None = None
        self._prompts = list(prompts) if prompts is not None else None
        self._splits: dict[str, ImageCaptions] = {}
        self._reference: ImageCaptions | None = None

    # ---------------------------------------------------------------- from a run
    @classmethod
    def from_run(
        cls,
        run: Run,
        *,
        num_samples: int,
        seed: int,
        metric_names: Sequence[str] = (),
        draw: Callable | None = None,
        cache_root: str | Path | None = None,
    ) -> Evaluation:
        pipeline = run.recipe.pipeline.info.cls(run.recipe.train)

        def sampler():
            return draw if draw is not None else trainer.sampler(run, pipeline)

        def critic():
            make = getattr(pipeline, "critic", None)
            if make is None:
                raise UserError(
                    f"pipeline '{run.recipe.pipeline.info.name}' has no critic (a network that scores "
                    "image-caption pairs) to evaluate; drop the metric that needs one"
                )
            judge, label = make(run)
            found = run.checkpoints.good()
            step, digest = (found[0], file_digest(found[1])) if found else (0, "")
            return judge, f"{label} (step {step})", digest

        return cls(
            run.parts.dataset(),
            num_samples=num_samples,
            seed=seed,
            sampler=sampler,
            critic=critic,
            device=run.device,
            cache_root=cache_root,
            metric_names=metric_names,
            quiet=run.quiet or not run.files.writes,
            sampling=pipeline.sampling(),
        )

    def progress(self, total: int | None, desc: str, unit: str = "it"):
        """A progress bar on stderr (`dalle_kit.progress.bar`) for a step of a metric that takes a while; use it as a
        context manager and call ``update(n)``. Silent when this evaluation is quiet."""
        return progress.bar(total, desc, unit, quiet=self.quiet)

    # ---------------------------------------------------------------- data
    @property
    def dataset_name(self) -> str:
        return getattr(self.dataset, "name", type(self.dataset).__name__)

    @property
    def dataset_config(self) -> dict[str, Any]:
        config = getattr(self.dataset, "config", None)
        return attrs.asdict(config) if config is not None and attrs.has(type(config)) else {}

    def split(self, name: str) -> ImageCaptions:
        """A whole split of the dataset (loaded once)."""
        if name not in self._splits:
            self._splits[name] = self.dataset.load(name)
        return self._splits[name]

    @property
    def n_reference(self) -> int:
        full = len(self.split(self.reference_split))
        return min(self._n_reference or self.num_samples, full)

    @property
    def reference(self) -> ImageCaptions:
        """The first `n_reference` images of the reference split, with their captions and attributes."""
        if self._reference is None:
            data = self.split(self.reference_split)
            n = self.n_reference
            self._reference = ImageCaptions(
                data.images[:n], data.captions[:n], {k: v[:n] for k, v in data.attributes.items()}, data.attribute_names
            )
        return self._reference

    @property
    def prompts(self) -> list[str]:
        """`num_samples` captions drawn with the seed from the reference split (no repeats until it runs out)."""
        if self._prompts is None:
            captions = self.split(self.reference_split).captions
            g = torch.Generator().manual_seed(self.seed)
            order: list[int] = []
            while len(order) < self.num_samples:
                order += torch.randperm(len(captions), generator=g).tolist()
            self._prompts = [captions[i] for i in order[: self.num_samples]]
        return self._prompts

    @property
    def generated(self) -> torch.Tensor:
        """uint8 [num_samples, C, H, W]: the pipeline's images for `prompts`, noise from torch.Generator(seed)."""
        if self._generated is None:
            self._generated = self.generated_float.round().to(torch.uint8)
        return self._generated

    @property
    def generated_float(self) -> torch.Tensor:
        """The same images before rounding: float32 [num_samples, C, H, W] in [0, 255] (for protocols that score
        unrounded images); for images given as uint8, those values."""
        if self._generated_float is None:
            if self._generated is not None:
                self._generated_float = self._generated.float()
                return self._generated_float
            if self._sampler is None:
                raise UserError("this evaluation has no sampler to draw images from")
            draw = self._sampler()
            g = torch.Generator().manual_seed(self.seed)
            chunks = []
            with torch.inference_mode(), self.progress(len(self.prompts), "generating images", "img") as bar:
                for i in range(0, len(self.prompts), GENERATE_BATCH):
                    images = draw(self.prompts[i : i + GENERATE_BATCH], g)
                    chunks.append(to_unit255_images(images.float().cpu()))
                    bar.update(len(chunks[-1]))
            self._generated_float = torch.cat(chunks)
        return self._generated_float

    @property
    def n_generated(self) -> int:
        return len(self._generated) if self._generated is not None else self.num_samples

    def critic(self) -> tuple[Callable, str, str]:
        """(judge, label, weights hash): judge(images in [-1, 1], captions) -> logits, from the pipeline."""
        if "critic" not in self.shared:
            if self._critic is None:
                raise UserError("this evaluation has no critic to score images with")
            self.shared["critic"] = self._critic()
        return self.shared["critic"]

    def cache(self, namespace: str) -> ContentCache:
        return ContentCache(namespace, self.cache_root)

    def protocol(
        self,
        *,
        extractor: str,
        weights_hash: str,
        n_reference: int | None = None,
        reference_split: str | None | object = _SAME,
        name: str = "dalle-kit",
        published: str = "",
    ) -> Protocol:
        """The protocol of a score computed on this evaluation's images (reference defaults to this one's)."""
        return Protocol(
            n_generated=self.n_generated,
            n_reference=self.n_reference if n_reference is None else n_reference,
            reference_split=self.reference_split if reference_split is _SAME else cast("str | None", reference_split),
            extractor=extractor,
            weights_hash=weights_hash,
            seed=self.seed,
            dataset=self.dataset_name,
            name=name,
            published=published,
            sampling=self.sampling,
        )


# -------------------------------------------------------------------- running metrics
def build_metrics(
    names: Sequence[str], registry, source: str = "--metric", settings: dict[str, Any] | None = None
) -> dict[str, Metric]:
    """Instantiate each named metric with its config from `settings` (the recipe's ``[eval.<metric>]`` tables)
    or its defaults, failing with one line on an unknown name."""
    if not names:
        raise UserError("no metrics to compute: give --metric NAME or list them in the recipe's [eval] metrics")
    metrics = {}
    for name in dict.fromkeys(names):
        try:
            info = registry.get("metric", name, source=source, key="metric")
        except RecipeError as exc:
            raise UserError(f"{source}: {exc.problem}; {exc.fix}") from None
        config = (settings or {}).get(name)
        metrics[name] = info.cls(config if config is not None else info.cls.Config())
    return metrics


def compute_metrics(evaluation: Evaluation, metrics: dict[str, Metric]) -> dict[str, MetricResult]:
    """Check every metric can run (weights present...) before any work, then compute them in order."""
    for metric in metrics.values():
        metric.check(evaluation)
    return {name: metric.compute(evaluation).check(name) for name, metric in metrics.items()}


def run_metrics(run: Run, metrics: Sequence[str] | None = None) -> dict[str, Metric]:
    """The metrics `metrics` names (default: the recipe's ``[eval] metrics``), built with the recipe's settings; an
    unknown name or an empty list is refused in one line before anything is computed."""
    names = list(metrics) if metrics else list(run.recipe.eval.metrics)
    if not names:
        dataset = run.recipe.parts["data"].info.name if "data" in run.recipe.parts else ""
        raise UserError(
            f"{run.dir}: no metrics to compute (its recipe's [eval] metrics is empty); score it with "
            f"metrics that suit {dataset or 'its data'}: `{hints.eval_command(run.dir, run.registry.suggested_metrics(dataset))}`"
        )
    return build_metrics(names, run.registry, settings=run.recipe.metric_settings)


def evaluate_run(
    run: Run,
    metrics: Sequence[str] | None = None,
    num_samples: int | None = None,
    step: int | None = None,
    *,
    seed: int | None = None,
    draw: Callable | None = None,
    cache_root: str | Path | None = None,
) -> dict[str, MetricResult]:
    """Score the run's latest weights and log one ``kind="eval"`` row per metric to metrics.jsonl.

    Defaults come from the recipe's ``[eval]`` table (metrics, num_samples) and its seed; `step`
    defaults to the latest checkpoint's. `draw` replaces the pipeline's sampler (for evaluating
    during training with the weights in memory). Returns the results by metric name.
    """
    built = run_metrics(run, metrics)
    num_samples = num_samples or run.recipe.eval.num_samples
    seed = run.recipe.seed if seed is None else seed
    if step is None:
        state = run.checkpoints.load(prefixes=())
        if state is None and draw is None:
            raise UserError(f"{run.dir}: no checkpoint to evaluate yet; train first with {hints.dalle_kit('run')}")
        step = int(state["step"]) if state is not None else 0
    evaluation = Evaluation.from_run(
        run, num_samples=num_samples, seed=seed, metric_names=list(built), draw=draw, cache_root=cache_root
    )
    results = compute_metrics(evaluation, built)
    for name, result in results.items():
        run.log(step, kind="eval", **result.row(name))
    run.registry.hook.run_evaluated(run=run, step=step, results=results)
    return results


def evaluate_configured(run: Run, *, step: int | None = None, draw: Callable | None = None) -> dict[str, MetricResult]:
    """Evaluate with the recipe's ``[eval]`` table; nothing (an empty dict) when it lists no metrics.

    For the end of training (``api.train``) and for pipelines evaluating every ``[eval] every`` steps
    (pass ``draw`` built from the weights in memory and the current ``step``).
    """
    if not run.recipe.eval.metrics:
        return {}
    return evaluate_run(run, step=step, draw=draw)


def check_metrics(run: Run, metrics: Sequence[str] | None = None) -> None:
    """Fail now, with one line, if a metric the run will compute cannot run here (call before training)."""
    names = list(metrics) if metrics else list(run.recipe.eval.metrics)
    if not names:
        return
    built = build_metrics(names, run.registry, source=f"{run.dir}: [eval] metrics", settings=run.recipe.metric_settings)
    evaluation = Evaluation(
        run.parts.dataset(),
        num_samples=run.recipe.eval.num_samples,
        seed=run.recipe.seed,
        device=run.device,
        metric_names=list(built),
        quiet=run.quiet,
    )
    for metric in built.values():
        metric.check(evaluation)


def format_result(name: str, result: MetricResult) -> str:
    """One line: ``fid  12.345  (n_generated=..., reference=..., extractor=..., weights=..., seed=...)``."""
    values = "  ".join(f"{k}={v:.6g}" for k, v in result.values.items())
    return f"{name}: {values}  [{result.protocol.line()}]"
