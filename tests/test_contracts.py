"""Every built-in part passes the conformance kit (the same kit plugin authors use)."""

from __future__ import annotations

import pytest

from dalle_kit.registry import Registry
from dalle_kit.tools.testing import check_part

REGISTRY = Registry.discover(select="")
SMALL = {  # configs that keep the checks fast; defaults are checked too where they are cheap
    ("dataset", "shapes"): {"train_size": 64, "test_size": 32},
    ("generator", "resnet"): {"channels": 32, "latent_dim": 16},
    ("discriminator", "resnet-sn"): {"channels": 32},
}


# cifar10 cannot be had here (tests/test_cifar10.py checks its format); imagefolder needs a folder
# (tests/test_imagefolder.py runs the kit on one it writes); emoji and tuxpaint need their packages' files
# (tests/test_emoji.py and tests/test_tuxpaint.py run the kit on small copies in the packages' layouts).
NEEDS_FILES = {("dataset", "cifar10"), ("dataset", "imagefolder"), ("dataset", "emoji"), ("dataset", "tuxpaint")}


@pytest.mark.parametrize(
    "kind, name", [(k, n) for k, parts in REGISTRY.parts.items() for n in parts if (k, n) not in NEEDS_FILES]
)
def test_builtin_part_conforms(kind, name, fashion_root):
    cls = REGISTRY.parts[kind][name].cls
    config = cls.Config(**SMALL[(kind, name)]) if (kind, name) in SMALL else None
    if (kind, name) == ("dataset", "fashion-mnist") and fashion_root is not None:  # Debian's copy not installed here
        config = cls.Config(root=str(fashion_root), download=False)
    check_part(cls, config)


@pytest.mark.parametrize("image_size", [16, 64])
def test_dcgan_conforms_at_other_sizes(image_size):
    for kind in ("generator", "discriminator"):
        cls = REGISTRY.parts[kind]["dcgan"].cls
        check_part(cls, cls.Config(**({"ngf": 8} if kind == "generator" else {"ndf": 8})), image_size=image_size)


def test_dcgan_batchnorm_variant_conforms():
    cls = REGISTRY.parts["discriminator"]["dcgan"].cls
    check_part(cls, cls.Config(ndf=8, norm="batch"))


def test_resnet_affine_modulation_variant_conforms():
    cls = REGISTRY.parts["generator"]["resnet"].cls
    check_part(cls, cls.Config(channels=16, latent_dim=16, conditioning="affine"))


def test_contract_reference_is_generated_from_the_code():
    """docs/contracts.md is `python -m dalle_kit.tools.contracts`'s output: the code is the one source of the contracts."""
    from pathlib import Path

    from dalle_kit.tools.contracts import render

    committed = (Path(__file__).parent.parent / "docs" / "contracts.md").read_text()
    assert committed == render(), "docs/contracts.md is stale: python -m dalle_kit.tools.contracts > docs/contracts.md"
    for needle in (
        "register_generators(register)",
        "needs_real_logits",
        "generator_loss(fake_logits: Tensor, real_logits",
        "parse_caption",
        "schedule_depends_on_steps",
        "check(image_size: int, channels: int, text_dim",
    ):
        assert needle in committed, needle


def test_plugins_show_a_kind_prints_its_contract(run_cli):
    code, out, err = run_cli("plugins", "show", "generator")
    assert code == 0, err
    assert "`dalle_kit_plugins.gan.Generator` (hook `register_generators(register)`)" in out
    assert "added by gan.kinds (dalle-kit)" in out and "forward(z[B, latent_dim]" in out
    code, out, err = run_cli("plugins", "show", "dataset")
    assert code == 0 and "`dalle_kit.Dataset`" in out and "a core kind" in out
    code, out, err = run_cli("plugins", "show", "generatr")
    assert code == 2 and "did you mean 'generator'" in err
