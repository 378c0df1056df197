"""The context handed to metrics.

A metric (`dalle_kit.Metric`) receives an `Evaluation` and returns a `MetricResult`: its numbers
plus the `Protocol` that produced them (images generated and used as reference, the reference
split, the feature extractor and a hash of its weights, the seed). Evaluating a run (drawing with
its pipeline, logging the rows, the `eval` command) is a tool above the core: `dalle_kit.tools.evaluate`.

What an `Evaluation` offers (everything is computed on first use and shared by the metrics):

- ``generated``: uint8 images [N, C, H, W], drawn for ``prompts`` with ``torch.Generator(seed)``
- ``prompts``: N captions drawn (seeded) from the reference split, so prompts are in-distribution
- ``reference``: the first ``n_reference`` images of the dataset's reference split, with captions
- ``dataset``: the dataset part (``dataset.load("train")`` for metrics that fit something)
- ``critic()``: the run's critic as ``(images in [-1, 1], captions) -> logits``, if its pipeline offers
  ``critic(run) -> (judge, label)``
- ``cache_root``: where content-keyed results go (``dalle_kit.tools.cache.ContentCache(namespace, cache_root)``;
  None: the default cache); ``shared``: a dict metrics may use to share work within this evaluation (one feature
  pass for several scores)
- ``progress(total, desc, unit)``: a progress bar on stderr for any step that takes more than a few seconds
  (training a probe, extracting features); silent when the evaluation is ``quiet``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import torch

from . import progress
from .errors import UserError
from .parts import ImageCaptions, to_unit255_images
from .scores import Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .parts import Dataset

#: Images generated per call of the pipeline's sampler.
GENERATE_BATCH = 250
_SAME = object()  # "the evaluation's own reference split"


class Evaluation:
    """The context a metric computes from. Build it from a run with `dalle_kit.tools.evaluate.evaluation_of`, or
    directly (tests, a bench's calibration rows)."""

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
        self.cache_root = Path(cache_root) if cache_root is not None else None  # None: the default cache
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
