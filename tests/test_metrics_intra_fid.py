"""intra-fid: per-class FID from the same Inception features as fid/kid/prc (one pass), and it can fail."""

from __future__ import annotations

import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

import dalle_kit
from dalle_kit.evaluation import Evaluation
from dalle_kit.tools.evaluate import build_metrics, compute_metrics
from dalle_kit.registry import get_registry
from dalle_kit_plugins.metrics import inception
from dalle_kit_plugins.metrics.fidelity import IntraFIDConfig
from dalle_kit_plugins.data.shapes import Shapes

N = 30
SMALL = 8  # images (generated and reference) where only the cache is under test


pytestmark = pytest.mark.usefixtures("offline_inception")


@pytest.fixture(scope="module")
def shapes():
    return Shapes(Shapes.Config(train_size=N, test_size=N, partial_captions=False))


@pytest.fixture
def passes(monkeypatch):
    """How many images went through the extractor's forward."""
    inception.register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[inception.FID_HELPER_NAME]
    original, count = cls.forward, []

    def counting(self, x):
        count.append(len(x))
        return original(self, x)

    monkeypatch.setattr(cls, "forward", counting)
    return count


def evaluate(shapes, names, prompts, tmp_path, images=None, settings=None):
    train = shapes.load("train")
    evaluation = Evaluation(
        shapes,
        num_samples=len(prompts),
        generated=train.images[: len(prompts)] if images is None else images,
        prompts=prompts,
        cache_root=tmp_path / "cache",
        metric_names=names,
    )
    return compute_metrics(evaluation, build_metrics(names, get_registry(), settings=settings))


def test_intra_fid_shares_the_feature_pass_and_separates_right_from_wrong_classes(shapes, tmp_path, passes):
    settings = {"intra-fid": IntraFIDConfig(attributes=["shape"], min_per_class=3)}
    captions = shapes.load("train").captions
    right = evaluate(shapes, ["fid", "prc", "intra-fid"], captions, tmp_path, settings=settings)
    assert sum(passes) == 2 * N  # generated once and reference once, for three metrics
    per_class = right["intra-fid"].details["per_class"]
    assert set(per_class) <= {"circle", "square", "triangle"} and len(per_class) >= 2
    assert right["intra-fid"].values["intra_fid"] == pytest.approx(sum(per_class.values()) / len(per_class))
    counts = right["intra-fid"].details["n_generated_reference_per_class"]
    assert all(g >= 3 and r >= 3 for g, r in counts.values())

    # The same images under other shapes' prompts: every class is compared with the wrong images.
    wrong = [
        c.replace("circle", "X").replace("square", "circle").replace("triangle", "square").replace("X", "triangle")
        for c in captions
    ]
    swapped = evaluate(shapes, ["fid", "intra-fid"], wrong, tmp_path, settings=settings)
    assert swapped["fid"].values["fid"] == pytest.approx(right["fid"].values["fid"])  # class-blind: unchanged
    assert swapped["intra-fid"].values["intra_fid"] > right["intra-fid"].values["intra_fid"] * 1.05


def test_intra_fid_refuses_what_it_cannot_score(shapes, tmp_path):
    captions = shapes.load("train").captions
    with pytest.raises(dalle_kit.UserError, match="no attribute 'class'"):
        evaluate(shapes, ["intra-fid"], captions, tmp_path)  # shapes has no 'class' attribute
    settings = {"intra-fid": IntraFIDConfig(attributes=["shape", "position"], min_per_class=3)}
    partial = ["a red circle"] * N  # states no position
    with pytest.raises(dalle_kit.UserError, match="does not state shape and position"):
        evaluate(shapes, ["intra-fid"], partial, tmp_path, settings=settings)
    settings = {"intra-fid": IntraFIDConfig(attributes=["shape"], min_per_class=1000)}
    with pytest.raises(dalle_kit.UserError, match="raise num_samples"):
        evaluate(shapes, ["intra-fid"], captions, tmp_path, settings=settings)


def test_reference_features_are_cached_as_safetensors(shapes, tmp_path, passes):
    captions = shapes.load("train").captions[:SMALL]
    evaluate(shapes, ["fid"], captions, tmp_path)
    files = sorted(p.name for p in (tmp_path / "cache" / "fidelity-reference").glob("*/*"))
    assert files == ["features.safetensors", "manifest.json"]  # nothing pickled
    passes.clear()
    evaluate(shapes, ["kid"], captions, tmp_path)
    assert sum(passes) == SMALL  # only the generated images
    entry = next((tmp_path / "cache" / "fidelity-reference").iterdir())
    (entry / "features.safetensors").write_bytes(b"garbage")  # a damaged entry is recomputed, not trusted
    passes.clear()
    result = evaluate(shapes, ["fid"], captions, tmp_path)
    assert sum(passes) == 2 * SMALL and result["fid"].values["fid"] > 0
    # A crafted pickle swapped into the cache folder (as the features file, and under torch-fidelity's own
    # cache names) is never unpickled: the entry is recomputed and the payload does not run.
    marker = tmp_path / "pwned"
    torch.save({"features": Payload(str(marker))}, entry / "features.safetensors")
    for name in ("reference-inception-v3-compat-features-2048.pt", "reference-stat-fid-2048.pt"):
        torch.save(Payload(str(marker)), entry / name)
    passes.clear()
    again = evaluate(shapes, ["fid"], captions, tmp_path)
    assert not marker.exists(), "a pickle in the cache folder ran"
    assert sum(passes) == 2 * SMALL and again["fid"].values["fid"] == pytest.approx(result["fid"].values["fid"])
    assert torch.isfinite(torch.tensor(result["fid"].values["fid"]))


class Payload:
    """Unpickling this runs code: it would write a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_inception_weights_file_is_refused_without_running_code(shapes, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"conv.weight": torch.zeros(1), "evil": Payload(str(marker))}, weights)
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(weights))
    with pytest.raises(dalle_kit.UserError) as exc:
        evaluate(shapes, ["fid"], shapes.load("train").captions, tmp_path)
    assert not marker.exists(), "the crafted pickle ran"
    assert str(weights) in str(exc.value) and "\n" not in str(exc.value)


def nuclear_norm_fid(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """The Frechet distance a third way: Tr sqrt(S1 S2) is the nuclear norm of X1 X2^T / sqrt((n1 - 1)(n2 - 1))."""
    x1, x2 = features_1.double(), features_2.double()
    mu1, mu2 = x1.mean(0), x2.mean(0)
    x1, x2 = x1 - mu1, x2 - mu2
    n1, n2 = len(x1) - 1, len(x2) - 1
    nuclear = torch.linalg.svdvals(x1 @ x2.T).sum()
    return float(
        (mu1 - mu2).square().sum() + x1.square().sum() / n1 + x2.square().sum() / n2 - 2 * nuclear / (n1 * n2) ** 0.5
    )


@pytest.mark.parametrize(("n_1", "n_2"), [(90, 120), (120, 90), (200, 200)])
def test_the_low_rank_class_distance_is_the_frechet_distance(n_1, n_2):
    from dalle_kit_plugins.metrics.fidelity import frechet_distance, frechet_distance_low_rank

    g = torch.Generator().manual_seed(n_1 + n_2)
    mixing = torch.randn(256, 256, generator=g) / 16  # correlated features, like Inception's, in 256 dimensions
    a = torch.randn(n_1, 256, generator=g) @ mixing
    b = (torch.randn(n_2, 256, generator=g) * 1.5 + 0.3) @ mixing
    low_rank = frechet_distance_low_rank(a, b)
    assert low_rank == pytest.approx(nuclear_norm_fid(a, b), rel=1e-9)
    assert low_rank == pytest.approx(frechet_distance(a.double(), b.double()), rel=1e-5)  # torch-fidelity's eigvals
    assert frechet_distance_low_rank(b, a) == pytest.approx(low_rank, rel=1e-9)  # symmetric
    same = frechet_distance_low_rank(a, a)
    assert abs(same) < 1e-9 * low_rank and low_rank > 1.0  # zero for one set, large for different ones
