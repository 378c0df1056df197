"""Pipeline `vae`: a text-conditional variational autoencoder (conditional VAE, Sohn et al. 2015).

An image encoder q(z | x, t) that sees the image and the caption vector gives a Gaussian over the
latent (mean and log-variance, reparameterised as in Kingma & Welling 2014); the recipe's
[generator] (normally `vae-decoder`) decodes z with the caption vector. The loss per image is

    sum of squared errors over pixels in [-1, 1]  +  beta * KL(q(z | x, t) || N(0, I))

that is, a Gaussian likelihood with variance 1/2 up to a constant, with beta optionally warmed up
linearly from 0 over the first `kl_warmup` steps. A trainable text encoder is optimised with the
VAE (one Adam over all three networks). Sampling draws z from the prior N(0, I) and decodes it with
the prompt's vector. Resuming restores weights, the optimizer, the step counter and every RNG the
loop draws from, so a stopped and resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import adam_betas, finite_positive, init_from_state, param
from dalle_kit_plugins import gan
from dalle_kit_plugins.common import finetune
from dalle_kit_plugins.vae.objective import negative_elbo

#: Held-out images (the first of the "test" split) whose reconstruction error is logged as recon_test.
TEST_IMAGES = 256


def _levels(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 1:
        raise dalle_kit.UserError(f"vae: the image encoder needs a power-of-two image size >= 8, got {image_size}")
    return n


class ImageEncoder(nn.Module):
    """q(z | x, t): stride-2 convolutions down to 4x4, then an MLP over (features, text) -> (mu, logvar)."""

    conditioning_layers = ("head",)  # where the text enters: what parameter-efficient fine-tuning trains

    def __init__(self, *, channels: int, image_size: int, text_dim: int, latent_dim: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = channels, width
        for _ in range(_levels(image_size)):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c_in, c_out = c_out, c_out * 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        hidden = 4 * width
        self.head = nn.Sequential(
            nn.Linear(c_in * 16 + text_dim, hidden), nn.LeakyReLU(0.2, True), nn.Linear(hidden, 2 * latent_dim)
        )

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(torch.cat([self.features(images), text], dim=1)).chunk(2, dim=1)
        return mu, logvar


class VAE(dalle_kit.Pipeline):
    """Text-conditional VAE: image encoder + generator (decoder) + text encoder, one Adam, optional KL warm-up."""

    name = "vae"
    finetunes = True
    sections = {"data": "dataset", "text_encoder": "text_encoder", "generator": "generator"}

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        steps: int = param(3000, "training iterations", validator=attrs.validators.gt(0))
        lr: float = param(1e-3, "Adam learning rate (all networks)", validator=finite_positive)
        betas: tuple[float, float] = param((0.9, 0.999), "Adam betas, each in [0, 1)", validator=adam_betas)
        beta: float = param(
            1.0, "weight of the KL term against the per-image sum of squared errors", validator=attrs.validators.ge(0)
        )
        kl_warmup: int = param(
            0,
            "raise the KL weight linearly from 0 to beta over this many steps (0: off)",
            validator=attrs.validators.ge(0),
        )
        encoder_width: int = param(
            32,
            "channels of the image encoder's first convolution (doubling with depth)",
            validator=attrs.validators.gt(0),
        )
        grad_clip: float = param(
            0.0, "clip the gradient norm of all parameters together to this (0: off)", validator=attrs.validators.ge(0)
        )
        log_every: int = param(
            25, "write losses and recon_test to metrics.jsonl every this many steps", validator=attrs.validators.gt(0)
        )

    # ------------------------------------------------------------------ building
    def check(self, image_size: int, channels: int, text_dim: int | None) -> None:
        try:
            _levels(image_size)
        except dalle_kit.UserError:
            raise dalle_kit.UserError(
                f"[data] size = {image_size}: the vae pipeline's image encoder halves the image down to "
                "4x4, so it needs a power of two >= 8; use size = 32 (or 8, 16, 64, ...)"
            ) from None

    def _build(self, run, data, state: dict | None, train_captions=None):
        """The modules by checkpoint key: text encoder fitted or restored; weights fresh or from the recipe's
        ``init_from`` run, with its fine-tuning mode applied (see `dalle_kit_plugins.common.finetune`)."""
        source = init_from_state(run) if state is None else None
        encoder = run.parts.text_encoder(state if state is not None else source, train_captions)
        context = dict(text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        generator = run.parts.build("generator", **context)
        image_encoder = ImageEncoder(
            channels=data.channels,
            image_size=data.image_size,
            text_dim=encoder.dim,
            latent_dim=generator.latent_dim,
            width=self.config.encoder_width,
        ).to(run.device)
        modules = {"image_encoder": image_encoder, "generator": generator, "text_encoder": encoder}
        finetune.prepare(run, modules, source)
        return modules

    def kl_weight(self, step: int) -> float:
        """beta at (1-based) training step `step`, after the linear warm-up."""
        cfg = self.config
        return cfg.beta if not cfg.kl_warmup else cfg.beta * min(1.0, step / cfg.kl_warmup)

    def setup(self, run, state: dict | None) -> dalle_kit.Training:
        cfg = self.config
        data = run.parts.dataset()
        train_set = data.load("train")
        modules = self._build(run, data, state, train_set.captions)
        image_encoder, generator, encoder = modules["image_encoder"], modules["generator"], modules["text_encoder"]
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        data_rng, noise_rng = run.rng("data"), run.rng("noise")
        test_set = data.load("test")
        test_real, test_captions = test_set.batch(torch.arange(min(TEST_IMAGES, len(test_set))))
        device = run.device
        train_encoder, train_image_encoder, train_g = (
            run.parts.parallel(m) for m in (encoder, image_encoder, generator)
        )

        def train_step(done: int) -> dict[str, float]:
            idx = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            real, captions = train_set.batch(idx)
            real = real.to(device, non_blocking=True)
            text = train_encoder(captions)
            mu, logvar = train_image_encoder(real, text)
            eps = torch.randn(mu.shape, generator=noise_rng).to(device)
            recon_images = train_g(mu + eps * (0.5 * logvar).exp(), text)
            loss, recon, kl = negative_elbo(recon_images, real, mu, logvar, self.kl_weight(done + 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

        return dalle_kit.Training(
            modules=modules,
            optimizers={"vae": opt},
            train_step=train_step,
            draw=lambda m: gan.prior_sampler(m["text_encoder"], m["generator"], device),
            extra_state=lambda: {"text_encoder": encoder.extra_state_json()},
            log_values=lambda step: {"recon_test": self._recon_error(modules, test_real, test_captions, device)},
        )

    # ------------------------------------------------------------------ evaluation
    def _recon_error(self, modules, images: torch.Tensor, captions: list[str], device) -> float:
        """Mean squared error per pixel (in [-1, 1] units) of the held-out batch, eval mode, z = mu."""
        modes = {key: m.training for key, m in modules.items()}
        for m in modules.values():
            m.eval()
        with torch.inference_mode():
            images = images.to(device)
            text = modules["text_encoder"](captions)
            mu, _ = modules["image_encoder"](images, text)
            error = (modules["generator"](mu, text).float() - images.float()).square().mean().item()
        for key, m in modules.items():
            m.train(modes[key])
        return error


@dalle_kit.hookimpl
def register_pipelines(register):
    register(VAE)
