"""The conformance kit catches a deliberately broken part in each of its checks."""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit.tools import testing as kit
from dalle_kit_plugins import gan


class GoodGenerator(gan.Generator):
    name = "good"

    @attrs.frozen
    class Config:
        latent_dim: int = param(8, "noise size")

    def __init__(self, config, *, text_dim, image_size, channels):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        self.latent_dim = config.latent_dim
        self.net = nn.Linear(config.latent_dim + text_dim, channels * image_size * image_size)

    def forward(self, z, text):
        out = torch.tanh(self.net(torch.cat([z, text], 1)))
        return out.view(len(z), self.channels, self.image_size, self.image_size)


def variant(**methods):
    return type("Broken", (GoodGenerator,), {"name": "broken", **methods})


def test_good_generator_passes():
    kit.check_part(GoodGenerator)


BROKEN = {
    "output shape": variant(forward=lambda self, z, t: GoodGenerator.forward(self, z, t)[:, :, :16]),
    "output range": variant(forward=lambda self, z, t: GoodGenerator.forward(self, z, t) * 3),
    "gradients": variant(forward=lambda self, z, t: GoodGenerator.forward(self, z, t).detach()),
    "text conditioning": variant(forward=lambda self, z, t: GoodGenerator.forward(self, z, torch.zeros_like(t))),
    "determinism": variant(forward=lambda self, z, t: GoodGenerator.forward(self, z + torch.randn_like(z), t)),
    "dtype move": variant(
        forward=lambda self, z, t: GoodGenerator.forward(self, z.float(), t.float())
    ),  # hard-coded dtype
}


@pytest.mark.parametrize(
    "check, fn",
    [
        ("output shape", kit.check_output_shape),
        ("output range", kit.check_output_range),
        ("gradients", kit.check_gradients),
        ("text conditioning", kit.check_conditioning),
        ("determinism", kit.check_determinism),
        ("dtype move", kit.check_dtype_device),
    ],
)
def test_check_catches_broken_generator(check, fn):
    with pytest.raises(kit.ConformanceError, match=f"generator 'broken' fails {check}"):
        fn(BROKEN[check])
    with pytest.raises(kit.ConformanceError):
        kit.check_part(BROKEN[check])


def test_state_roundtrip_catches_unsaved_state():
    class Unsaved(GoodGenerator):
        name = "unsaved"

        def __init__(self, config, **ctx):
            super().__init__(config, **ctx)
            self.scale = torch.rand(1).item() + 0.5  # state outside state_dict: lost on save/load

        def forward(self, z, text):
            return torch.tanh(GoodGenerator.forward(self, z, text) * self.scale)

    with pytest.raises(kit.ConformanceError, match="generator 'unsaved' fails state save/load"):
        kit.check_state_roundtrip(Unsaved)


def test_schema_roundtrip_catches_lossy_config():
    class Lossy(GoodGenerator):
        name = "lossy"

        @attrs.frozen
        class Config:
            latent_dim: int = param(8, "noise size")
            sizes: tuple = param((1, 2), "an untyped tuple comes back from TOML as a list")

    with pytest.raises(kit.ConformanceError, match="generator 'lossy' fails schema round-trip"):
        kit.check_schema_roundtrip(Lossy)


def test_registration_catches_missing_name_and_base():
    with pytest.raises(kit.ConformanceError, match="fails registration: class attribute `name` is empty"):
        kit.check_registration(type("Nameless", (GoodGenerator,), {"name": ""}))
    with pytest.raises(kit.ConformanceError, match="is not a subclass of one of the installed part kinds"):
        kit.check_registration(nn.Linear)


def test_loss_direction_caught():
    class Upside(gan.Loss):
        name = "upside"

        def discriminator_loss(self, real, fake):
            return real.mean() - fake.mean()

        def generator_loss(self, fake):
            return fake.mean()

    with pytest.raises(kit.ConformanceError, match="loss 'upside' fails direction"):
        kit.check_part(Upside)


def test_dataset_checks_caught():
    class Flaky(dalle_kit.Dataset):
        name = "flaky"

        @property
        def image_size(self):
            return 8

        def load(self, split):
            images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)  # new pixels every call
            return dalle_kit.ImageCaptions(images, ["a thing"] * 4)

    with pytest.raises(kit.ConformanceError, match="dataset 'flaky' fails determinism"):
        kit.check_part(Flaky)

    class WrongSize(Flaky):
        name = "wrong-size"

        @property
        def image_size(self):
            return 16

    with pytest.raises(kit.ConformanceError, match="dataset 'wrong-size' fails image shape"):
        kit.check_part(WrongSize)


def test_text_encoder_checks_caught():
    class Constant(dalle_kit.TextEncoder):
        name = "constant"
        dim = 4

        def __init__(self, config):
            super().__init__(config)
            self.w = nn.Parameter(torch.ones(4))

        def encode(self, captions):
            return self.w.expand(len(captions), 4)

    with pytest.raises(kit.ConformanceError, match="text_encoder 'constant' fails text conditioning"):
        kit.check_part(Constant)


def test_loss_penalty_caught():
    class DetachedPenalty(gan.Loss):
        name = "detached-penalty"

        def discriminator_loss(self, real, fake):
            return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()

        def generator_loss(self, fake):
            return -fake.mean()

        def penalty(self, discriminator, real, fake, text):
            return discriminator(real, text).detach().abs().mean()  # no gradient reaches D

    with pytest.raises(
        kit.ConformanceError, match="loss 'detached-penalty' fails penalty: the penalty gives no gradient"
    ):
        kit.check_part(DetachedPenalty)
