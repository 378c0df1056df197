"""Lucic et al. 2018's setting: its FID protocol (lucic2018), its networks (infogan) and its losses, against
google/compare_gan's first commit (the paper's code)."""

from __future__ import annotations

import math

import pytest
import torch

import dalle_kit
from conftest import SHAPES_16
from dalle_kit import api
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.evaluation import Evaluation
from dalle_kit.tools.evaluate import build_metrics, compute_metrics
from dalle_kit.registry import Registry, get_registry

PARTS = Registry.discover(select="").parts
LOSSES = PARTS["loss"]

#: The tiny shapes recipe of conftest with the study's networks at 16x16 (small widths) instead of dcgan.
TINY_INFOGAN = (
    """\
name = "tiny-infogan"
pipeline = "gan"
seed = 0

"""
    + SHAPES_16
    + """
[generator]
name = "infogan"
width = 8

[discriminator]
name = "infogan"
width = 8

[loss]
name = "bce"

[train]
steps = 8
batch_size = 16
checkpoint_every = 4

[sample]
prompts = ["a red circle"]
every = 0
"""
)


@pytest.fixture
def infogan_recipe(tmp_path):
    path = tmp_path / "tiny-infogan.toml"
    path.write_text(TINY_INFOGAN)
    return path


def mnist(size: int):
    info = PARTS["dataset"]["mnist"]
    return info.cls(info.cls.Config(size=size))


def fid(dataset, generated: torch.Tensor, protocol: str, tmp_path, memo: dict | None = None):
    """FID of `generated` (uint8 or float32 in [0, 255]) against the first images of the test split."""
    metrics = build_metrics(
        ["fid"], get_registry(), settings={"fid": PARTS["metric"]["fid"].cls.Config(protocol=protocol)}
    )
    evaluation = Evaluation(
        dataset,
        num_samples=len(generated),
        seed=0,
        n_reference=len(generated),
        prompts=["a digit"] * len(generated),
        cache_root=tmp_path / "cache",
        generated=generated.round().to(torch.uint8) if generated.is_floating_point() else generated,
    )
    if generated.is_floating_point():
        evaluation._generated_float = generated
    if memo is not None:
        evaluation.shared.update(memo)
    return evaluation, compute_metrics(evaluation, metrics)["fid"]


def test_lucic2018_feeds_unpadded_tiled_grey_floats_to_the_resize(offline_inception, tmp_path):
    """The native protocol hands the network the 28x28 images tiled to 3 equal channels, unrounded, unpadded; the
    padded protocol hands it 32x32 uint8 images with a black border; and the two references differ."""
    from dalle_kit_plugins.metrics import fidelity

    native, padded = mnist(28), mnist(32)
    train28 = native.load("train").images[:12]
    seen: list[torch.Tensor] = []
    memo: dict = {}
    # One network for both protocols, built once, with a hook that records every input it is given.
    extractor = fidelity.generated_extractor(PARTS["metric"]["fid"].cls.Config(), torch.device("cpu"))
    fidelity.extract_features(train28[:1], extractor, 16, torch.device("cpu"), memo)
    (net,) = memo.values()
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))

    generated = train28.float() + 0.25  # unrounded values: a protocol that rounds would lose the quarter
    evaluation, result = fid(native, generated, "lucic2018", tmp_path, memo)
    fed = torch.cat(seen)
    assert fed.dtype == torch.float32 and fed.shape[1:] == (3, 28, 28)
    assert torch.equal(fed[:, 0], fed[:, 1]) and torch.equal(fed[:, 0], fed[:, 2])
    generated_fed, reference_fed = fed[:12], fed[12:]
    assert torch.equal(generated_fed[:, :1], generated)  # as generated: not rounded, not padded, not resized
    assert torch.equal(reference_fed[:, :1], native.load("test").images[:12].float())
    assert (
        result.protocol.name == "lucic2018-preprocessing" and result.protocol.published == ""
    )  # 12 images, not 10,000
    assert "protocol=lucic2018-preprocessing (ours)" in result.protocol.line()

    seen.clear()
    evaluation_padded, result_padded = fid(padded, padded.load("train").images[:12], "dalle-kit", tmp_path, memo)
    fed = torch.cat(seen)
    assert fed.dtype == torch.uint8 and fed.shape[1:] == (3, 32, 32)
    assert fed[:, :, :2].sum() == 0 and fed[:, :, :, :2].sum() == 0  # the padding border
    assert result_padded.protocol.name == "dalle-kit"

    ref_native = fidelity.reference_features(evaluation, extractor, 16, "lucic2018")
    ref_padded = fidelity.reference_features(evaluation_padded, extractor, 16, "dalle-kit")
    assert ref_native.shape == ref_padded.shape and not torch.allclose(ref_native, ref_padded, atol=1e-3)
    entries = sorted(p.parent.name for p in (tmp_path / "cache").rglob(fidelity.FEATURES_FILE))
    assert len(entries) == 2  # one cache entry per protocol
    assert result.values["fid"] != result_padded.values["fid"]


def test_float_images_of_integer_values_give_the_uint8_features(offline_inception):
    from dalle_kit_plugins.metrics import fidelity

    images = mnist(28).load("test").images[:4]
    extractor = fidelity.generated_extractor(PARTS["metric"]["fid"].cls.Config(), torch.device("cpu"))
    memo: dict = {}
    a = fidelity.extract_features(images, extractor, 4, torch.device("cpu"), memo)
    b = fidelity.extract_features(images.float(), extractor, 4, torch.device("cpu"), memo)
    assert torch.equal(a, b)


def test_lucic2018_refuses_padded_data_before_any_work(offline_inception, tmp_path):
    with pytest.raises(dalle_kit.UserError, match=r"\[data\] size = 28"):
        fid(mnist(32), mnist(32).load("train").images[:4], "lucic2018", tmp_path)


def test_lucic2018_is_published_only_at_ten_thousand_test_images():
    from dalle_kit_plugins.metrics.fidelity import LUCIC2018_CITATION, FidelityConfig, protocol_name

    class Fake:
        n_generated = n_reference = 10000
        reference_split = "test"

    config = FidelityConfig(protocol="lucic2018")
    assert protocol_name(config, Fake()) == ("lucic2018", LUCIC2018_CITATION)
    Fake.n_generated = 5000
    assert protocol_name(config, Fake()) == ("lucic2018-preprocessing", "")
    assert protocol_name(FidelityConfig(), Fake()) == ("dalle-kit", "")


# ------------------------------------------------------------------ networks
def build(kind, name, text_dim=0, size=28, channels=1, **config):
    info = PARTS[kind][name]
    return info.cls(info.cls.Config(**config), text_dim=text_dim, image_size=size, channels=channels)


def test_infogan_networks_have_compare_gans_layers():
    g, d = build("generator", "infogan"), build("discriminator", "infogan")
    linear = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(64, 1024), (1024, 128 * 7 * 7)]
    deconv = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in deconv] == [
        (128, 64, (4, 4), (2, 2)),
        (64, 1, (4, 4), (2, 2)),
    ]
    assert sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in g.modules()) == 3
    assert all(
        m.momentum == 0.001 and m.eps == 0.001
        for m in g.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    )
    conv = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in conv] == [(1, 64), (64, 128)]
    assert [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, torch.nn.Linear)] == [
        (6272, 1024),
        (1024, 1),
    ]
    assert sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules()) == 2
    no_bn = build("discriminator", "infogan", batchnorm=False)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in no_bn.modules())
    # unconditional beside `none`: z ~ U[-1, 1]^64, images in [-1, 1] (the study's sigmoid, rescaled), one logit each
    z = g.sample_latent(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 64) and z.min() >= -1 and z.max() <= 1 and z.min() < -0.5
    images = g(z, torch.zeros(5, 0))
    assert images.shape == (5, 1, 28, 28) and images.min() > -1 and images.max() < 1
    assert d(images, torch.zeros(5, 0)).shape == (5,)


def test_infogan_generator_bn_momentum_sets_how_fast_sampling_statistics_settle():
    study, fast = build("generator", "infogan"), build("generator", "infogan", bn_momentum=0.1)
    z = study.sample_latent(64, torch.Generator().manual_seed(0))
    fast.load_state_dict(study.state_dict())
    for g in (study, fast):
        g.train()
        for _ in range(20):
            g(z, torch.zeros(64, 0))
    bn = [m for m in fast.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert [m.momentum for m in bn] == [0.1] * 3
    # after 20 training batches the running variance of the first batch norm is near the batch's at 0.1, not at 0.001
    batch_var = fast.fc[0](z).var(dim=0)
    assert (fast.fc[1].running_var - batch_var).abs().mean() < 0.2 * (study.fc[1].running_var - batch_var).abs().mean()


def test_infogan_reads_the_text_when_there_is_one():
    g, d = build("generator", "infogan", text_dim=8), build("discriminator", "infogan", text_dim=8)
    z, text = g.sample_latent(4, torch.Generator().manual_seed(0)), torch.randn(4, 8)
    g.eval()
    d.eval()
    assert not torch.equal(g(z, text), g(z, text.flip(0)))
    images = g(z, text)
    assert not torch.allclose(d(images, text), d(images, text.flip(0)))


def test_no_text_encoder_gives_empty_vectors():
    info = PARTS["text_encoder"]["none"]
    encoder = info.cls(info.cls.Config())
    assert encoder.dim == 0 and encoder.encode(["a", "b c"]).shape == (2, 0) and not encoder.trainable


# ------------------------------------------------------------------ losses
def make(name, **config):
    cls = LOSSES[name].cls
    return cls(cls.Config(**config))


def test_minimax_generator_minimises_log_one_minus_d():
    fake = torch.tensor([0.5, -2.0])
    expected = torch.log(1 - torch.sigmoid(fake)).mean()
    assert make("minimax").generator_loss(fake).item() == pytest.approx(expected.item(), rel=1e-6)
    real = torch.tensor([1.0, 3.0])
    assert make("minimax").discriminator_loss(real, fake).item() == pytest.approx(
        make("bce").discriminator_loss(real, fake).item()
    )


def test_lsgan_on_sigmoid_as_compare_gan():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
    s = torch.sigmoid
    expected = 0.5 * ((s(real) - 1).square().mean() + s(fake).square().mean())
    assert make("lsgan", sigmoid=True).discriminator_loss(real, fake).item() == pytest.approx(expected.item())


class Quadratic(torch.nn.Module):
    """D(x) = <w, x>^2 / 2 per image: a known, non-constant input gradient (w <w, x>)."""

    def __init__(self, numel):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(numel, generator=torch.Generator().manual_seed(1)) / numel**0.5)

    def forward(self, images, text):
        return (images.flatten(1) @ self.w).square() / 2


def test_wgan_gp_in_compare_gans_pixels_doubles_the_norm():
    from dalle_kit_plugins.gan.kinds import LinearJudge as _LinearJudge

    judge = _LinearJudge()
    with torch.no_grad():
        judge.weight.copy_(judge.weight / judge.weight.norm() * 0.5)  # |grad| = 0.5 in -1..1, 1.0 in 0..1
    real = torch.rand(4, 3, 8, 8) * 2 - 1
    text = torch.randn(4, 16)
    assert make("wgan-gp").penalty(judge, real, real.flip(0), text).item() == pytest.approx(10 * 0.25, abs=1e-4)
    assert make("wgan-gp", pixels="0..1").penalty(judge, real, real.flip(0), text).item() == pytest.approx(
        0.0, abs=1e-4
    )


def test_dragan_penalty_is_compare_gans(monkeypatch):
    """x_p = x + 0.5 std(x) u, interpolate with a ~ U[0, 1) per image, gradient of sigmoid(D) in 0..1 pixels."""
    judge = Quadratic(3 * 8 * 8)
    real = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.manual_seed(5)
    value = make("dragan").penalty(judge, real, None, torch.zeros(4, 0))
    torch.manual_seed(5)
    u = torch.rand(real.shape)
    a = torch.rand(4, 1, 1, 1)
    x = real + a * (real + 0.5 * real.std(unbiased=False) * u - real)
    logit = (x.flatten(1) @ judge.w).square() / 2
    grad = (torch.sigmoid(logit) * (1 - torch.sigmoid(logit)) * (x.flatten(1) @ judge.w))[:, None] * judge.w[None]
    slopes = ((2 * grad).square().sum(1) + 1e-4).sqrt()
    assert value.item() == pytest.approx((10 * (slopes - 1).square().mean()).item(), rel=1e-5)


def test_began_k_follows_the_equilibrium_and_is_state():
    loss = make("began", gamma=0.5, k_lambda=0.1, k_update="during")
    real, fake = torch.tensor([-0.2, -0.4]), torch.tensor([-0.1, -0.1])  # errors 0.3 and 0.1
    assert not loss.after_steps
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(0.3)  # k = 0 at first
    k = loss.k
    assert k == pytest.approx(0.1 * (0.5 * 0.3 - 0.1))
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(0.3 - k * 0.1)
    after = make("began", gamma=0.5, k_lambda=0.1)  # compare_gan's order, the default
    assert after.after_steps
    after.discriminator_loss(real, fake)
    assert after.k == 0.0
    after.after_step(real, fake)
    assert after.k == pytest.approx(k)
    other = make("began")
    other.load_extra_state_json(loss.extra_state_json())
    assert other.k == loss.k
    assert loss.generator_loss(fake).item() == pytest.approx(0.1)
    d = build("discriminator", "began", size=16)
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    errors = -d(images, torch.zeros(3, 0))
    assert errors.shape == (3,) and (errors > 0).all() and (errors < 1).all()


def test_began_resumes_bit_exact_with_its_k(infogan_recipe, tmp_path, run_cli):
    """The loss's state is saved with each checkpoint: a stopped and resumed BEGAN run ends with the same weights and k."""
    overrides = ['discriminator={name = "began"}', "loss.name=began", "train.n_critic=2"]
    runs = tmp_path / "runs"
    full = api.train(str(infogan_recipe), overrides, runs_dir=runs / "full", quiet=True)
    part = api.train(str(infogan_recipe), overrides, stop_at=4, runs_dir=runs / "part", quiet=True)
    code, _, err = run_cli("run", "--resume", part.dir, "-q")
    assert code == 0, err
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    assert a["step"] == b["step"] == 8
    for net in ("generator", "discriminator"):
        for key, tensor in a["models"][net].items():
            assert torch.equal(tensor, b["models"][net][key]), f"{net}.{key} differs"
    assert a["extra"]["loss"]["k"] == b["extra"]["loss"]["k"] and a["extra"]["loss"]["k"] != 0
    assert math.isfinite(a["extra"]["loss"]["k"])


def test_began_k_moves_after_the_steps_as_compare_gan_does(infogan_recipe, tmp_path, monkeypatch):
    """With k_update = "after" the pipeline calls the loss once per discriminator step with logits recomputed after
    the step, and k is the sum of their moves; "during" calls nothing. The recomputation leaves batch norms'
    running statistics as they were."""
    from dalle_kit_plugins.gan import began
    from dalle_kit_plugins.gan.pipeline import frozen_statistics

    calls = []
    original = began.BEGANLoss.after_step

    def spy(self, real_logits, fake_logits):
        calls.append((real_logits.float().mean().item(), fake_logits.float().mean().item()))
        original(self, real_logits, fake_logits)

    monkeypatch.setattr(began.BEGANLoss, "after_step", spy)
    overrides = ['discriminator={name = "began"}', "loss.name=began", "train.n_critic=3", "train.steps=2"]
    run = api.train(str(infogan_recipe), overrides, runs_dir=tmp_path / "after", quiet=True)
    assert len(calls) == 2 * 3
    k = load_state(latest_checkpoint(run.checkpoints.folder)[1])["extra"]["loss"]["k"]
    assert k == pytest.approx(sum(0.001 * (0.75 * -real - -fake) for real, fake in calls)) and k != 0
    calls.clear()
    api.train(str(infogan_recipe), [*overrides, 'loss.k_update="during"'], runs_dir=tmp_path / "during", quiet=True)
    assert calls == []

    norm = torch.nn.BatchNorm1d(4).train()
    before = {k: v.clone() for k, v in norm.named_buffers()}
    with frozen_statistics(norm):
        norm(torch.randn(8, 4) + 3)
        assert not torch.equal(norm.running_mean, before["running_mean"])
    assert all(torch.equal(v, before[k]) for k, v in norm.named_buffers())


def test_began_k_moves_by_the_ranks_mean_errors(monkeypatch):
    """In several processes every rank moves k by the errors averaged over the ranks, so all keep one k."""
    import torch.distributed as dist

    other_rank = torch.tensor([0.5, 0.3])  # the other rank's mean errors (real, fake)

    def all_reduce(t):
        t.add_(other_rank)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    loss = make("began", gamma=0.5, k_lambda=0.1)
    loss.after_step(torch.tensor([-0.2, -0.4]), torch.tensor([-0.1, -0.1]))  # this rank: 0.3 and 0.1
    assert loss.k == pytest.approx(0.1 * (0.5 * 0.4 - 0.2))  # the mean errors: 0.4 and 0.2


@pytest.mark.parametrize("loss", ["minimax", "wgan", "dragan"])
def test_study_losses_train_with_infogan(loss, infogan_recipe, tmp_path):
    run = api.train(str(infogan_recipe), [f"loss.name={loss}", "train.steps=3"], runs_dir=tmp_path / "runs", quiet=True)
    rows = [r for r in run.files.read_metrics() if r.get("kind") == "train"]
    assert rows and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)


def test_shipped_lucic_grids_load():
    """The reproduction grids (their base recipes are checked with every shipped recipe in test_recipe_errors)."""
    from dalle_kit.tools.bench import load_grid

    for name in ("lucic-mnist", "lucic-fashion"):
        grid = load_grid(f"recipes/{name}.toml", get_registry())
        cells = grid.cells()
        assert [c.params["cell"] for c in cells][2:9] == [
            "NS GAN",
            "WGAN",
            "MM GAN",
            "LSGAN",
            "WGAN GP",
            "DRAGAN",
            "BEGAN",
        ]
        ours = {"lucic-mnist": ["NS GAN, lr 2e-4", "WGAN, lr 2e-4"], "lucic-fashion": []}[name]
        assert [c.params["cell"] for c in cells][9:] == ours
        assert sum(bool(c.real) for c in cells) == 2 and all(c.published for c in cells if not c.real)


def test_shipped_mnist_ablation_changes_one_choice_a_cell():
    from dalle_kit.tools.bench import load_grid

    cells = load_grid("recipes/mnist-ablation.toml", get_registry()).cells()
    assert cells[0].params["cell"] == "the recipe" and all(c.base == "mnist" for c in cells)
    changed = [
        [o.partition("=")[0] for o in c.overrides if o.split("=")[0] not in ("seed", "name", "eval.metrics")]
        for c in cells
    ]
    assert changed[0] == [] and all(changed[1:]), changed
    assert len({c.id for c in cells}) == len(cells) == 8
