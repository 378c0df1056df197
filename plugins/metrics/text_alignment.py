"""Metric `text-alignment`: do the generated images show what their prompt says?

For datasets whose images carry attribute labels (``ImageCaptions.attributes``, such as `shapes`:
shape, colour, size, position) and whose captions can be parsed back into attributes. A probe
classifier (a small CNN, one head per attribute) is trained on the real train split, checked on the
real test split (it must reach ``min_probe_accuracy`` on every attribute, default 98%, or the metric
refuses) and cached on disk, keyed by the dataset's name and config and the probe's settings.

The score: prompts are drawn from the test captions; an image matches its prompt when the probe
reads every attribute the prompt states (only those: "a red circle" says nothing about size or
position) as stated. Reported overall (all stated attributes right) and per attribute (among the
prompts stating it), with the probe's test accuracy per attribute.

Caption parsing: the dataset's ``parse_caption(text) -> {attribute: class name}``, as a method of the
dataset or a function of the module that defines it (`shapes` has the latter).
"""

from __future__ import annotations

import json
import sys
import time

import attrs
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit.tools.cache import ContentCache, file_digest
from dalle_kit.files import atomic_write_bytes, atomic_write_text
from dalle_kit import MetricResult

PROBE_VERSION = 1
PROBE_FILE = "probe.safetensors"
INFO_FILE = "probe.json"


class Probe(nn.Module):
    """Three conv blocks down to an 8x8 map, kept whole (position and small shapes need the layout), one linear head per attribute."""

    def __init__(self, channels: int, classes: dict[str, int], width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(8),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(2 * width * 64, n) for k, n in classes.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.inference_mode()
    def predict(self, images_uint8: torch.Tensor, batch: int = 500) -> dict[str, torch.Tensor]:
        self.eval()
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.heads}
        for i in range(0, len(images_uint8), batch):
            logits = self(dalle_kit.to_float_images(images_uint8[i : i + batch]))
            for k, v in logits.items():
                out[k].append(v.argmax(1))
        return {k: torch.cat(v) for k, v in out.items()}


@attrs.frozen
class ProbeSettings:
    width: int = 16
    epochs: int = 2
    train_images: int = 4000
    batch_size: int = 128
    lr: float = 3e-3
    noise: float = 0.08  # Gaussian noise added to training images, for robustness to generator artifacts
    seed: int = 0


def caption_parser(dataset):
    """The dataset's parse_caption (method, or function of its module), or None."""
    parse = getattr(dataset, "parse_caption", None)
    if parse is None:
        parse = getattr(sys.modules.get(type(dataset).__module__), "parse_caption", None)
    return parse if callable(parse) else None


def train_probe(train: dalle_kit.ImageCaptions, settings: ProbeSettings, bar=None) -> Probe:
    """A probe trained on the first ``settings.train_images`` of `train`; `bar` (a progress bar, optional) advances
    by one per batch."""
    torch.manual_seed(settings.seed)
    g = torch.Generator().manual_seed(settings.seed)
    classes = {k: len(v) for k, v in train.attribute_names.items()}
    probe = Probe(train.images.shape[1], classes, settings.width)
    n = min(settings.train_images, len(train))
    opt = torch.optim.Adam(probe.parameters(), lr=settings.lr)
    steps = settings.epochs * ((n + settings.batch_size - 1) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=steps)
    probe.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, settings.batch_size):
            idx = order[i : i + settings.batch_size]
            x = dalle_kit.to_float_images(train.images[idx])
            x = x + settings.noise * torch.randn(x.shape, generator=g)
            logits = probe(x)
            loss = sum(F.cross_entropy(logits[k], train.attributes[k][idx]) for k in classes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
    return probe.eval()


def probe_accuracy(probe: Probe, data: dalle_kit.ImageCaptions) -> dict[str, float]:
    predicted = probe.predict(data.images)
    return {k: float((predicted[k] == data.attributes[k]).float().mean()) for k in predicted}


def load_or_train_probe(evaluation, settings: ProbeSettings) -> tuple[Probe, dict]:
    """The cached probe for this dataset config, trained (and checked on the test split) on a miss."""
    train = evaluation.split("train")
    if not train.attributes or not train.attribute_names:
        raise dalle_kit.UserError(
            f"text-alignment needs a dataset with attribute labels (like shapes); '{evaluation.dataset_name}' has none"
        )
    fields = {
        "probe_version": PROBE_VERSION,
        "dataset": evaluation.dataset_name,
        "dataset_config": evaluation.dataset_config,
        "settings": attrs.asdict(settings),
    }
    cache = ContentCache("text-alignment-probe", evaluation.cache_root)
    entry = cache.entry(fields)
    classes = {k: len(v) for k, v in train.attribute_names.items()}
    probe = Probe(train.images.shape[1], classes, settings.width)
    info = cache.load_module(entry, probe, PROBE_FILE, INFO_FILE)  # None: absent, damaged or planted; trained again
    if info is not None:
        return probe.eval(), info
    t0 = time.monotonic()
    n = min(settings.train_images, len(train))
    batches = settings.epochs * ((n + settings.batch_size - 1) // settings.batch_size)
    with evaluation.progress(
        batches, f"text-alignment: training its probe on {evaluation.dataset_name}/train (once, then cached)", "batch"
    ) as bar:
        probe = train_probe(train, settings, bar)
    test = evaluation.split("test")
    info = {
        "test_accuracy": probe_accuracy(probe, test),
        "n_test": len(test),
        "n_train": min(settings.train_images, len(train)),
        "train_seconds": round(time.monotonic() - t0, 1),
        "attribute_names": train.attribute_names,
    }
    atomic_write_text(entry / INFO_FILE, json.dumps(info, indent=2) + "\n")
    weights = {k: v.contiguous() for k, v in probe.state_dict().items()}
    atomic_write_bytes(entry / PROBE_FILE, save(weights))  # last: the entry is complete
    info["weights_hash"] = file_digest(entry / PROBE_FILE)
    return probe, info


class TextAlignment(dalle_kit.Metric):
    """Fraction of generated images whose attributes (read by a probe classifier) match what the prompt states."""

    name = "text-alignment"

    @attrs.frozen
    class Config:
        min_probe_accuracy: float = param(
            0.98,
            "refuse to score when the probe's held-out accuracy on any attribute is lower",
            validator=[attrs.validators.ge(0), attrs.validators.le(1)],
        )

    settings = ProbeSettings()

    def probe(self, evaluation) -> tuple[Probe, dict]:
        key = ("text-alignment-probe", self.settings)
        if key not in evaluation.shared:
            probe, info = load_or_train_probe(evaluation, self.settings)
            weak = {k: v for k, v in info["test_accuracy"].items() if v < self.config.min_probe_accuracy}
            if weak:
                worst = min(weak, key=weak.get)
                raise dalle_kit.UserError(
                    f"text-alignment: the probe for '{evaluation.dataset_name}' reads '{worst}' right on only "
                    f"{weak[worst]:.1%} of held-out test images (< {self.config.min_probe_accuracy:.0%}); its scores would not be trustworthy"
                )
            evaluation.shared[key] = (probe, info)
        return evaluation.shared[key]

    def check(self, evaluation) -> None:
        if caption_parser(evaluation.dataset) is None:
            raise dalle_kit.UserError(
                f"text-alignment needs a dataset whose captions can be parsed into attributes "
                f"(parse_caption, like shapes); '{evaluation.dataset_name}' has none"
            )
        self.probe(evaluation)

    def compute(self, evaluation) -> MetricResult:
        self.check(evaluation)
        probe, info = self.probe(evaluation)
        parse = caption_parser(evaluation.dataset)
        names = info["attribute_names"]
        prompts = evaluation.prompts
        predicted = probe.predict(evaluation.generated)
        all_right = torch.ones(len(prompts), dtype=torch.bool)
        right = {k: 0 for k in names}
        stated_count = {k: 0 for k in names}
        for i, prompt in enumerate(prompts):
            stated = parse(prompt)
            if not stated:
                raise dalle_kit.UserError(f"text-alignment: prompt {prompt!r} states no attribute the probe knows")
            for attribute, value in stated.items():
                ok = names[attribute].index(value) == int(predicted[attribute][i])
                stated_count[attribute] += 1
                right[attribute] += ok
                all_right[i] &= ok
        values = {"text_alignment": float(all_right.float().mean())}
        values.update({f"text_alignment_{k}": right[k] / stated_count[k] for k in names if stated_count[k]})
        details = {"probe_test_accuracy": info["test_accuracy"], "prompts_stating": stated_count}
        protocol = evaluation.protocol(
            extractor=f"probe-cnn v{PROBE_VERSION} (trained on {evaluation.dataset_name}/train)",
            weights_hash=info["weights_hash"],
            n_reference=info["n_test"],
            reference_split="test",
        )
        return MetricResult(values, protocol, details)


@dalle_kit.hookimpl
def register_metrics(register):
    register(TextAlignment)
