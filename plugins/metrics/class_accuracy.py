"""Metrics `class-accuracy` and `cas`: does a generated image show the class its prompt names?

For datasets whose images carry a single-label attribute (``ImageCaptions.attributes["class"]``, as
`mnist` and `fashion-mnist` have) and whose captions can be parsed back into it (``parse_caption``,
found as in `text-alignment`: a method of the dataset or a function of its module).

`class-accuracy`
    A classifier (a small CNN, `Classifier`) is trained on the real train split, tested on the real
    test split and cached on disk by content: the key holds the dataset's name and config, the
    attribute, the classifier's settings and digests of the training and test images and labels, so
    a changed file or setting is never served a stale classifier. Its test accuracy must reach
    ``min_accuracy`` (default per dataset, `MIN_ACCURACY`: 98.5% on MNIST, 90% on Fashion-MNIST,
    90% elsewhere) or the metric refuses. The score is the fraction of generated images it reads as
    the class their prompt names (per class in the details).

`cas` (Classification Accuracy Score, Ravuri & Vinyals 2019)
    The same architecture with the same settings (epochs, batch size, learning rate, seed) is trained
    from scratch on the generated images only, each labelled with its prompt's class, then tested on
    the real test split. Reported beside it: ``real_accuracy``, the test accuracy of the classifier
    trained on the real train split (the one `class-accuracy` uses, shared through the cache). Note
    the two training sets differ in size: CAS learns from ``n_generated`` images (the protocol's
    n_generated, for example 10,000), the real-data classifier from the whole train split (60,000 for
    MNIST), so a perfect generator with fewer samples scores somewhat below ``real_accuracy``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit.tools.cache import ContentCache, file_digest, tensor_digest
from dalle_kit.files import atomic_write_bytes, atomic_write_text
from dalle_kit import MetricResult
from dalle_kit_plugins.metrics.text_alignment import caption_parser

CLASSIFIER_VERSION = 1
WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"
NAMESPACE = "class-accuracy-classifier"

#: The least test accuracy the real-data classifier must reach, per dataset name (`DEFAULT_MIN_ACCURACY` otherwise).
MIN_ACCURACY: dict[str, float] = {"mnist": 0.985, "fashion-mnist": 0.90}
DEFAULT_MIN_ACCURACY = 0.90


class Classifier(nn.Module):
    """Three conv-BatchNorm-ReLU-maxpool blocks (width, 2x, 4x channels) down to a 4x4 map, then one linear layer."""

    def __init__(self, channels: int, classes: int, width: int = 16):
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [
                nn.Conv2d(i, o, 3, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(
            *block(channels, width),
            *block(width, 2 * width),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width * 16, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @torch.inference_mode()
    def predict(self, images_uint8: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """Class indices (int64, CPU) for uint8 images [N, C, H, W]."""
        self.eval()
        device = next(self.parameters()).device
        out = [
            self(dalle_kit.to_float_images(images_uint8[i : i + batch].to(device))).argmax(1).cpu()
            for i in range(0, len(images_uint8), batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@attrs.frozen
class ClassifierSettings:
    """How the classifier is trained, for the real data and for CAS alike (part of the cache key).

    The defaults are chosen to pass `MIN_ACCURACY` on MNIST (the full train split, 32x32) in a short CPU run.
    """

    width: int = 16
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    settings: ClassifierSettings,
    device: str | torch.device = "cpu",
    bar=None,
) -> Classifier:
    """A `Classifier` trained from scratch on uint8 images [N, C, H, W] and int64 labels [N]; deterministic in
    `settings.seed`, and the caller's global RNG stream is left as it was. `bar` (a progress bar, optional)
    advances by one per batch (`training_batches` in all)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        model = Classifier(images.shape[1], classes, settings.width).to(device)
        n, bs = len(images), settings.batch_size
        opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        steps = max(1, training_batches(n, settings))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=steps)
        model.train()
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=g)
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                if len(idx) < 2:  # BatchNorm needs two images
                    continue
                x = dalle_kit.to_float_images(images[idx].to(device))
                loss = F.cross_entropy(model(x), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if bar is not None:
                    bar.update(1)
    return model.eval()


def training_batches(n: int, settings: ClassifierSettings) -> int:
    """How many batches `train_classifier` runs on `n` images."""
    return settings.epochs * ((n + settings.batch_size - 1) // settings.batch_size)


def accuracy(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, classes: int
) -> tuple[float, list[float | None]]:
    """Overall accuracy and per-class accuracy (None for a class with no image)."""
    right = model.predict(images) == labels
    per_class = []
    for c in range(classes):
        mask = labels == c
        per_class.append(float(right[mask].float().mean()) if mask.any() else None)
    return float(right.float().mean()), per_class


# ---------------------------------------------------------------------------- dataset checks
def labelled_split(evaluation, split: str, attribute: str, metric: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images, labels, class names) of a split, or a one-line UserError if the dataset lacks the attribute."""
    data = evaluation.split(split)
    labels = data.attributes.get(attribute)
    names = data.attribute_names.get(attribute)
    if labels is None or not names:
        have = ", ".join(sorted(data.attributes)) or "none"
        raise dalle_kit.UserError(
            f"{metric} needs a dataset whose images carry a '{attribute}' label (like mnist or fashion-mnist); "
            f"'{evaluation.dataset_name}' has none (its attributes: {have})"
        )
    if labels.ndim != 1 or len(labels) != len(data.images):
        raise dalle_kit.UserError(
            f"{metric}: the '{attribute}' attribute of '{evaluation.dataset_name}' is not one "
            f"label per image (shape {tuple(labels.shape)}); it needs a single-label attribute"
        )
    return data.images, labels.long(), list(names)


def check_dataset(evaluation, attribute: str, metric: str) -> None:
    if caption_parser(evaluation.dataset) is None:
        raise dalle_kit.UserError(
            f"{metric} needs a dataset whose captions can be parsed into a class "
            f"(parse_caption, like mnist); '{evaluation.dataset_name}' has none"
        )
    labelled_split(evaluation, "train", attribute, metric)


def prompt_labels(evaluation, attribute: str, names: list[str], metric: str) -> torch.Tensor:
    """The class index each prompt names (int64 [N]); a one-line UserError for a prompt that names none."""
    parse = caption_parser(evaluation.dataset)
    labels = []
    for prompt in evaluation.prompts:
        stated = parse(prompt).get(attribute)
        if stated is None or stated not in names:
            raise dalle_kit.UserError(
                f"{metric}: prompt {prompt!r} names no {evaluation.dataset_name} {attribute} "
                f"(one of {', '.join(names)}); every prompt must state one"
            )
        labels.append(names.index(stated))
    return torch.tensor(labels, dtype=torch.long)


def check_images(evaluation, reference: torch.Tensor, metric: str) -> torch.Tensor:
    generated = evaluation.generated
    if tuple(generated.shape[1:]) != tuple(reference.shape[1:]):
        raise dalle_kit.UserError(
            f"{metric}: generated images are {tuple(generated.shape[1:])} but "
            f"'{evaluation.dataset_name}' images are {tuple(reference.shape[1:])}; "
            "evaluate with the dataset config the run was trained on"
        )
    return generated


# ---------------------------------------------------------------------------- the real-data classifier
def load_or_train_classifier(
    evaluation, settings: ClassifierSettings, attribute: str = "class", metric: str = "class-accuracy"
) -> tuple[Classifier, dict[str, Any]]:
    """The classifier trained on the real train split, from the cache or trained (and tested) on a miss.

    Returns it with its info: test accuracy (overall and per class), split sizes, training time,
    class names and ``weights_hash`` (the digest of the cached weights file).
    """
    train_x, train_y, names = labelled_split(evaluation, "train", attribute, metric)
    test_x, test_y, _ = labelled_split(evaluation, "test", attribute, metric)
    fields = {
        "classifier_version": CLASSIFIER_VERSION,
        "dataset": evaluation.dataset_name,
        "dataset_config": evaluation.dataset_config,
        "attribute": attribute,
        "classes": names,
        "settings": attrs.asdict(settings),
        "train_digest": [tensor_digest(train_x), tensor_digest(train_y)],
        "test_digest": [tensor_digest(test_x), tensor_digest(test_y)],
    }
    cache = ContentCache(NAMESPACE, evaluation.cache_root)
    entry = cache.entry(fields)
    model = Classifier(train_x.shape[1], len(names), settings.width)
    info = cache.load_module(entry, model, WEIGHTS_FILE, INFO_FILE)  # None: absent, damaged or planted; trained again
    if info is not None:
        return model.to(evaluation.device).eval(), info
    t0, cpu0 = time.monotonic(), time.process_time()
    with evaluation.progress(
        training_batches(len(train_x), settings),
        f"{metric}: training its classifier on {evaluation.dataset_name}/train (once, then cached)",
        "batch",
    ) as bar:
        model = train_classifier(train_x, train_y, len(names), settings, evaluation.device, bar)
    seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    test_accuracy, per_class = accuracy(model, test_x, test_y, len(names))
    info = {
        "test_accuracy": test_accuracy,
        "test_accuracy_per_class": dict(zip(names, per_class)),
        "n_train": len(train_x),
        "n_test": len(test_x),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu, 1),
        "class_names": names,
    }
    atomic_write_text(entry / INFO_FILE, json.dumps(info, indent=2) + "\n")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(entry / WEIGHTS_FILE, save(weights))  # last: the entry is complete
    info["weights_hash"] = file_digest(entry / WEIGHTS_FILE)
    return model, info


def min_accuracy_for(evaluation, configured: float | None) -> float:
    return configured if configured is not None else MIN_ACCURACY.get(evaluation.dataset_name, DEFAULT_MIN_ACCURACY)


def _probability(_, attribute, value):
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"'{attribute.name}' must be between 0 and 1, got {value}")


@attrs.frozen
class ClassifierConfig:
    attribute: str = param("class", "the single-label attribute of the dataset's images that prompts name")
    min_accuracy: float | None = param(
        None,
        "refuse to score when the real-data classifier's test accuracy is lower "
        "(default: the dataset's: mnist 0.985, fashion-mnist 0.90, others 0.90)",
        validator=_probability,
    )
    epochs: int = param(
        3,
        "training epochs of the classifier (real data and, for cas, generated data alike)",
        validator=attrs.validators.gt(0),
    )
    width: int = param(
        16, "channels of the classifier's first conv layer (then 2x, 4x)", validator=attrs.validators.gt(0)
    )
    seed: int = param(0, "seed of the classifier's initialisation and batch order")


class _ClassifierMetric(dalle_kit.Metric):
    """Shared by class-accuracy and cas: the dataset checks and the cached, checked real-data classifier."""

    Config = ClassifierConfig

    @property
    def settings(self) -> ClassifierSettings:
        return ClassifierSettings(width=self.config.width, epochs=self.config.epochs, seed=self.config.seed)

    def classifier(self, evaluation) -> tuple[Classifier, dict[str, Any]]:
        """The real-data classifier, shared by both metrics within an evaluation; refuses if it is too weak."""
        key = (NAMESPACE, self.settings, self.config.attribute)
        if key not in evaluation.shared:
            evaluation.shared[key] = load_or_train_classifier(
                evaluation, self.settings, self.config.attribute, self.name
            )
        model, info = evaluation.shared[key]
        minimum = min_accuracy_for(evaluation, self.config.min_accuracy)
        if info["test_accuracy"] < minimum:
            raise dalle_kit.UserError(
                f"{self.name}: the classifier trained on {evaluation.dataset_name}/train reads only {info['test_accuracy']:.2%} "
                f"of the test split right (< {minimum:.2%}); its scores would not be trustworthy (raise epochs or width)"
            )
        return model, info

    def check(self, evaluation) -> None:
        check_dataset(evaluation, self.config.attribute, self.name)
        self.classifier(evaluation)

    def extractor(self, evaluation, info: dict[str, Any]) -> str:
        return (
            f"classifier-cnn v{CLASSIFIER_VERSION} (trained on {evaluation.dataset_name}/train, "
            f"test accuracy {info['test_accuracy']:.2%})"
        )


class ClassAccuracy(_ClassifierMetric):
    """Fraction of generated images that a classifier trained on the real data reads as the class their prompt names."""

    name = "class-accuracy"

    def compute(self, evaluation) -> MetricResult:
        check_dataset(evaluation, self.config.attribute, self.name)
        names = evaluation.split("train").attribute_names[self.config.attribute]
        wanted = prompt_labels(evaluation, self.config.attribute, names, self.name)
        model, info = self.classifier(evaluation)
        generated = check_images(evaluation, evaluation.split("train").images, self.name)
        right = model.predict(generated) == wanted
        per_class = {
            name: float(right[wanted == c].float().mean()) for c, name in enumerate(names) if (wanted == c).any()
        }
        details = {
            "per_class": per_class,
            "prompts_per_class": {n: int((wanted == c).sum()) for c, n in enumerate(names)},
            "classifier_test_accuracy": info["test_accuracy"],
            "classifier_test_accuracy_per_class": info["test_accuracy_per_class"],
            "min_accuracy": min_accuracy_for(evaluation, self.config.min_accuracy),
        }
        protocol = evaluation.protocol(
            extractor=self.extractor(evaluation, info),
            weights_hash=info["weights_hash"],
            n_reference=info["n_test"],
            reference_split="test",
        )
        return MetricResult({"class_accuracy": float(right.float().mean())}, protocol, details)


class CAS(_ClassifierMetric):
    """Classification Accuracy Score: a classifier trained on the generated images alone, tested on the real test split."""

    name = "cas"

    def compute(self, evaluation) -> MetricResult:
        check_dataset(evaluation, self.config.attribute, self.name)
        attribute = self.config.attribute
        test_x, test_y, names = labelled_split(evaluation, "test", attribute, self.name)
        labels = prompt_labels(evaluation, attribute, names, self.name)
        _, info = self.classifier(evaluation)
        generated = check_images(evaluation, test_x, self.name)
        t0 = time.monotonic()
        with evaluation.progress(
            training_batches(len(generated), self.settings),
            f"cas: training a classifier on the {len(generated)} generated images",
            "batch",
        ) as bar:
            model = train_classifier(generated, labels, len(names), self.settings, evaluation.device, bar)
        seconds = time.monotonic() - t0
        cas, per_class = accuracy(model, test_x, test_y, len(names))
        details = {
            "per_class": dict(zip(names, per_class)),
            "real_accuracy_per_class": info["test_accuracy_per_class"],
            "n_train_generated": len(generated),
            "n_train_real": info["n_train"],
            "generated_per_class": {n: int((labels == c).sum()) for c, n in enumerate(names)},
            "train_seconds": round(seconds, 1),
            "note": f"cas trains on the {len(generated)} generated images, real_accuracy on the {info['n_train']} "
            f"real training images, with the same architecture and settings",
        }
        extractor = (
            f"classifier-cnn v{CLASSIFIER_VERSION} trained on the generated images "
            f"(epochs={self.config.epochs}, width={self.config.width}, seed={self.config.seed}); "
            f"real-data twin: " + self.extractor(evaluation, info)
        )
        protocol = evaluation.protocol(
            extractor=extractor, weights_hash=info["weights_hash"], n_reference=len(test_x), reference_split="test"
        )
        return MetricResult({"cas": cas, "real_accuracy": info["test_accuracy"]}, protocol, details)


@dalle_kit.hookimpl
def register_metrics(register):
    register(ClassAccuracy)
    register(CAS)
