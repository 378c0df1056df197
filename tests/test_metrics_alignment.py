"""text-alignment: the probe is accurate and cached; matching images score high, mismatched ones low."""

from __future__ import annotations

import time

import pytest
import torch

import dalle_kit
from dalle_kit.evaluation import Evaluation
from dalle_kit.tools.evaluate import compute_metrics
from dalle_kit_plugins.metrics import text_alignment
from dalle_kit_plugins.data.shapes import Shapes
from dalle_kit_plugins.metrics.text_alignment import ProbeSettings, TextAlignment, load_or_train_probe


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def shapes():
    return Shapes(Shapes.Config())  # the default config: the probe is checked on the real test split (2000 images)


def score(shapes, cache_root, images, prompts) -> dalle_kit.evaluation.MetricResult:
    evaluation = Evaluation(shapes, num_samples=len(images), generated=images, prompts=prompts, cache_root=cache_root)
    return compute_metrics(evaluation, {"text-alignment": TextAlignment(TextAlignment.Config())})["text-alignment"]


def test_probe_reaches_98_percent_per_attribute_and_is_cached(shapes, cache_root, monkeypatch):
    evaluation = Evaluation(shapes, num_samples=1, cache_root=cache_root)
    t0 = time.monotonic()
    _, info = load_or_train_probe(evaluation, ProbeSettings())
    assert time.monotonic() - t0 < 120  # trained in well under a minute on an idle 2-core CPU
    assert set(info["test_accuracy"]) == {"shape", "colour", "size", "position"}
    assert info["n_test"] == 2000
    for attribute, accuracy in info["test_accuracy"].items():
        assert accuracy >= 0.98, f"probe accuracy on held-out {attribute}: {accuracy:.3f}"

    monkeypatch.setattr(text_alignment, "train_probe", lambda *a, **k: pytest.fail("the cached probe was retrained"))
    _, again = load_or_train_probe(Evaluation(shapes, num_samples=1, cache_root=cache_root), ProbeSettings())
    assert again["weights_hash"] == info["weights_hash"] and again["test_accuracy"] == info["test_accuracy"]
    other = Shapes(Shapes.Config(train_size=500, test_size=100, seed=1))  # another dataset config: another entry
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        load_or_train_probe(Evaluation(other, num_samples=1, cache_root=cache_root), ProbeSettings())


def test_real_images_align_and_mismatched_ones_do_not(shapes, cache_root):
    test = shapes.load("test")
    n = 400
    matched = score(shapes, cache_root, test.images[:n], test.captions[:n])
    assert matched.values["text_alignment"] >= 0.97
    for attribute in ("shape", "colour", "size", "position"):
        assert matched.values[f"text_alignment_{attribute}"] >= 0.97
        assert matched.details["probe_test_accuracy"][attribute] >= 0.98
    p = matched.protocol
    assert (p.n_generated, p.n_reference, p.reference_split, p.seed) == (n, 2000, "test", 0)
    assert p.extractor.startswith("probe-cnn") and len(p.weights_hash) == 64

    shuffled = score(
        shapes, cache_root, test.images[:n].roll(1, dims=0), test.captions[:n]
    )  # each image under another's caption
    assert shuffled.values["text_alignment"] <= 0.25
    assert shuffled.values["text_alignment_colour"] <= 0.4


def test_only_the_stated_attributes_count(shapes, cache_root):
    test = shapes.load("test")
    names = test.attribute_names
    i = next(i for i in range(len(test)) if names["size"][int(test.attributes["size"][i])] == "large")
    colour, shape = (names[k][int(test.attributes[k][i])] for k in ("colour", "shape"))
    other_colour = next(c for c in names["colour"] if c != colour)
    prompts = [
        f"a {colour} {shape}",
        f"a large {colour} {shape}",
        f"a small {colour} {shape}",
        f"a {other_colour} {shape}",
    ]
    result = score(shapes, cache_root, test.images[i : i + 1].expand(4, -1, -1, -1).clone(), prompts)
    assert result.values["text_alignment"] == pytest.approx(0.5)  # the first two match, the last two do not
    assert result.values["text_alignment_size"] == pytest.approx(0.5)
    assert result.values["text_alignment_colour"] == pytest.approx(0.75)
    assert result.details["prompts_stating"] == {"shape": 4, "colour": 4, "size": 2, "position": 0}


class Unlabelled(dalle_kit.Dataset):
    name = "unlabelled"

    @property
    def image_size(self):
        return 16

    def load(self, split):
        return dalle_kit.ImageCaptions(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), ["a photo of a cat"] * 4)


def test_refuses_a_dataset_it_cannot_read(cache_root):
    evaluation = Evaluation(Unlabelled(dalle_kit.NoConfig()), num_samples=4, cache_root=cache_root)
    with pytest.raises(dalle_kit.UserError, match="text-alignment needs") as err:
        compute_metrics(evaluation, {"text-alignment": TextAlignment(TextAlignment.Config())})
    assert "\n" not in str(err.value)
