"""Pipeline `gan`: text-conditional adversarial training, a D step then a G step each iteration.

Wires a dataset, a text encoder, a generator, a discriminator and a loss. A trainable text
encoder is optimised with the discriminator. Options from the GAN literature: n_critic D steps
per G step, an exponential moving average of the generator (sampling and metrics then use it),
linear learning-rate decay, DiffAugment, bf16 autocast, gradient-norm and WGAN weight clipping,
matching-aware negatives, the mode-seeking regulariser against a generator that ignores its noise
(MSGAN, Mao et al. 2019), and fine-tuning from another run (the recipe's init_from/finetune).
Resuming restores weights, optimizers, the step counter and every RNG the loop draws from, so a
stopped and resumed run ends where an uninterrupted one would; two runs with the same seed on
the CPU give the same weights.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import attrs
import torch

import dalle_kit
from dalle_kit import adam_betas, finite_positive, init_from_state, param
from dalle_kit_plugins import gan
from dalle_kit_plugins.common import finetune
from dalle_kit_plugins.common.bf16 import has_bf16
from dalle_kit_plugins.gan.diffaugment import POLICIES, diff_augment


class GAN(dalle_kit.Pipeline):
    """Adversarial training: Adam, D step(s) then G step; EMA, lr decay, DiffAugment, bf16, clipping options."""

    name = "gan"
    finetunes = True
    ema_module = "generator"
    sections = {
        "data": "dataset",
        "text_encoder": "text_encoder",
        "generator": "generator",
        "discriminator": "discriminator",
        "loss": "loss",
    }

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        steps: int = param(
            3000, "training iterations (one D step and one G step each)", validator=attrs.validators.gt(0)
        )
        lr: float = param(2e-4, "Adam learning rate of the generator", validator=finite_positive)
        lr_d: float | None = param(
            None, "Adam learning rate of the discriminator (default: lr)", validator=finite_positive
        )
        betas: tuple[float, float] = param((0.5, 0.999), "Adam betas, each in [0, 1)", validator=adam_betas)
        grad_clip: float = param(
            0.0, "clip each network's gradient norm to this (0: off)", validator=attrs.validators.ge(0)
        )
        matching_aware: bool = param(
            False, "also show D real images with mismatched captions as negatives (GAN-INT-CLS, Reed et al. 2016)"
        )
        mode_seeking: float = param(
            0.0,
            "weight of the mode-seeking regulariser (MSGAN, Mao et al. 2019; 0: off): G also draws a "
            "second noise z2 for the same captions and adds weight / (|G(z,t) - G(z2,t)|_1 / |z - z2|_1 + 1e-5) "
            "to its loss, so that different noises give different images (try 1.0)",
            validator=attrs.validators.ge(0),
        )
        n_critic: int = param(
            1,
            "discriminator steps per generator step, each on a fresh batch (WGAN: 5)",
            validator=attrs.validators.gt(0),
        )
        d_weight_clip: float = param(
            0.0,
            "clamp every discriminator weight to [-c, c] after its step (WGAN, Arjovsky et al. 2017; 0: off)",
            validator=attrs.validators.ge(0),
        )
        ema: float = param(
            0.0,
            "decay of an exponential moving average of the generator's weights, e.g. 0.999 (0: off); "
            "samples and metrics use the average",
            validator=[attrs.validators.ge(0), attrs.validators.lt(1)],
        )
        ema_start: int = param(
            0, "step at which the average starts (it copies the generator until then)", validator=attrs.validators.ge(0)
        )
        lr_decay: Literal["none", "linear"] = param(
            "none", "'linear': both learning rates fall linearly to 0 at the last step"
        )
        diffaugment: list[str] = param(
            [],
            f"DiffAugment policies applied to everything D sees (Zhao et al. 2020): any of {', '.join(POLICIES)}",
            validator=attrs.validators.deep_iterable(attrs.validators.in_(POLICIES)),
        )
        rerank: int = param(
            1,
            "sampling: draw this many candidates per image and keep the one the discriminator rates most real for "
            "its caption (best-of-N re-ranking; 1: plain draws). Samples, sample grids and metrics use it",
            validator=attrs.validators.gt(0),
        )
        precision: Literal["fp32", "bf16"] = param(
            "fp32", "'bf16': forward passes under torch.autocast in bfloat16 (CPU and CUDA)"
        )
        profile: Literal["standard", "fast"] = param(
            "standard",
            "'fast': bf16 autocast where the CPU (avx512_bf16/amx) or GPU has bf16, channels_last tensors, "
            "multi-tensor (CUDA: fused) Adam, and one discriminator pass over real and fake images together "
            "when D has no batch norm; other numbers than 'standard', resume still bit for bit "
            "(benchmarks/results/train-throughput.md)",
        )

    # ------------------------------------------------------------------ building
    def setup(self, run, state: dict | None) -> dalle_kit.Training:
        """The text encoder, generator and discriminator from `state` (the run's own checkpoint), from the recipe's
        ``init_from`` run (with its fine-tuning mode), or fresh; the loss, optimizers and the training step."""
        cfg = self.config
        data = run.parts.dataset()
        train_set = data.load("train")
        source = init_from_state(run) if state is None else None
        encoder = run.parts.text_encoder(state if state is not None else source, train_set.captions)
        context = dict(text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        generator, discriminator = run.parts.build("generator", **context), run.parts.build("discriminator", **context)
        parts = {"text_encoder": encoder, "generator": generator, "discriminator": discriminator}
        finetune.prepare(run, parts, source)
        loss = run.parts.build("loss")
        if state is not None:  # a loss's own state (BEGAN's k) continues where the checkpoint left it
            loss.load_extra_state_json(state.get("extra", {}).get("loss", {}))
        g_params = [p for p in generator.parameters() if p.requires_grad]
        d_own = [p for p in discriminator.parameters() if p.requires_grad]
        d_params = d_own + [p for p in encoder.parameters() if p.requires_grad]
        fast = cfg.profile == "fast"
        device = run.device
        adam = ({"fused": True} if device.type == "cuda" else {"foreach": True}) if fast else {}
        opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=cfg.betas, **adam)
        opt_d = torch.optim.Adam(d_params, lr=cfg.lr_d or cfg.lr, betas=cfg.betas, **adam)
        data_rng, noise_rng, aug_rng = run.rng("data"), run.rng("noise"), run.rng("augment")
        layout = torch.channels_last if fast else torch.contiguous_format
        if fast:
            generator.to(memory_format=torch.channels_last)
            discriminator.to(memory_format=torch.channels_last)
        # One D call on real and fake together (and the mismatched pairs): the same loss with fewer, larger
        # kernels; not where D normalises over its batch, which would then mix real and fake statistics.
        one_pass = fast and not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()
        )
        # The forward passes whose losses train a network go through run.parts.parallel: in several processes it
        # averages the gradients (DDP). G's step calls D itself (frozen there), as does the gradient penalty.
        train_encoder, train_g, train_d = (run.parts.parallel(m) for m in (encoder, generator, discriminator))
        bf16 = cfg.precision == "bf16" or (fast and has_bf16(device))
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

        def augment(images):
            return diff_augment(images, cfg.diffaugment, aug_rng) if cfg.diffaugment else images

        def set_lr(done: int):
            factor = 1.0 - done / cfg.steps if cfg.lr_decay == "linear" else 1.0
            for group in opt_g.param_groups:
                group["lr"] = cfg.lr * factor
            for group in opt_d.param_groups:
                group["lr"] = (cfg.lr_d or cfg.lr) * factor

        def d_step(last: bool):
            idx = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            real, captions = train_set.batch(idx)
            real = real.to(device, non_blocking=True, memory_format=layout)
            z = generator.sample_latent(cfg.batch_size, noise_rng, device)
            with autocast():
                text = train_encoder(captions)
                fake = (train_g if last else generator)(z, text.detach())  # the last D step's fakes train G
                real_seen, fake_seen = augment(real), augment(fake.detach())
                if one_pass:
                    images, texts = [real_seen, fake_seen], [text, text]
                    if cfg.matching_aware:
                        images, texts = [*images, real_seen], [*texts, text.roll(1, dims=0)]
                    logits = train_d(torch.cat(images), torch.cat(texts)).split(len(real))
                    d_real, d_fake, d_wrong = (*logits, None)[:3]
                else:
                    d_real = train_d(real_seen, text)
                    d_fake = train_d(fake_seen, text)
                    if (
                        cfg.matching_aware
                    ):  # real images with another sample's caption count as fakes, half the negatives
                        d_wrong = train_d(real_seen, text.roll(1, dims=0))
                if cfg.matching_aware:
                    d_loss = loss.discriminator_loss(d_real, torch.cat([d_fake, d_wrong]))
                else:
                    d_loss = loss.discriminator_loss(d_real, d_fake)
                penalty = loss.penalty(discriminator, real_seen, fake_seen, text)
                if penalty is not None:
                    d_loss = d_loss + penalty
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(d_params, cfg.grad_clip)
            opt_d.step()
            if cfg.d_weight_clip:
                with torch.no_grad():
                    for p in discriminator.parameters():
                        p.clamp_(-cfg.d_weight_clip, cfg.d_weight_clip)
            return d_loss, d_real, d_fake, text, fake, z, real

        @torch.no_grad()
        def after_step(real, text, fake=None, z=None):
            """The loss's `after_step` with D's logits from the networks as they are now (G redraws the step's
            noise when it has stepped since); batch-norm statistics are left as the steps left them."""
            with frozen_statistics(generator, discriminator), autocast():
                fake = generator(z, text) if fake is None else fake
                loss.after_step(discriminator(real, text), discriminator(fake, text))

        def train_step(done: int) -> dict[str, float]:
            set_lr(done)
            for i in range(cfg.n_critic):
                d_loss, d_real, d_fake, text, fake, z, real = d_step(last=i == cfg.n_critic - 1)
                if loss.after_steps and i < cfg.n_critic - 1:  # G has not stepped: the step's fakes are G(z) now
                    after_step(real, text.detach(), fake=fake.detach())

            # G step against the updated D, on the last D step's noise and captions.
            discriminator.requires_grad_(False)
            with autocast():
                fake_logits = discriminator(augment(fake), text.detach())
                if loss.needs_real_logits:  # relativistic losses: D on this batch's real images too (no graph to G)
                    g_loss = loss.generator_loss(fake_logits, discriminator(augment(real), text.detach()))
                else:
                    g_loss = loss.generator_loss(fake_logits)
                if cfg.mode_seeking:  # a second noise for the same captions; its draw comes from noise_rng (resumable)
                    z2 = generator.sample_latent(len(z), noise_rng, device)
                    fake2 = generator(z2, text.detach())
                    ms_ratio = (fake - fake2).float().abs().mean() / (z - z2).float().abs().mean()
                    g_total = g_loss + cfg.mode_seeking / (ms_ratio + 1e-5)
                else:
                    g_total = g_loss
            opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(g_params, cfg.grad_clip)
            opt_g.step()
            for p in d_own:
                p.requires_grad_(True)
            if loss.after_steps:
                after_step(real, text.detach(), z=z)
            values = {"loss_d": d_loss.item(), "loss_g": g_loss.item()}
            if cfg.mode_seeking:
                values["ms_ratio"] = ms_ratio.item()  # image L1 / noise L1 between the two draws; higher: more diverse
            values.update(
                d_real=d_real.float().mean().item(), d_fake=d_fake.float().mean().item(), lr=opt_g.param_groups[0]["lr"]
            )
            return values

        return dalle_kit.Training(
            divergence_fix="lower [train] lr or add [train] grad_clip",
            modules=dict(parts),
            optimizers={"g": opt_g, "d": opt_d},
            train_step=train_step,
            draw=lambda m: gan.prior_sampler(
                m["text_encoder"], m["generator"], device, judge=m["discriminator"], candidates=cfg.rerank
            ),
            extra_state=lambda: {"text_encoder": encoder.extra_state_json(), "loss": loss.extra_state_json()},
        )

    def schedule_depends_on_steps(self) -> bool:
        return self.config.lr_decay != "none"

    def sampling(self) -> str:
        rerank = self.config.rerank
        return f"best of {rerank} draws by the discriminator" if rerank > 1 else ""

    def critic(self, run):
        """(``(images in [-1, 1], captions) -> logits``, label): the run's discriminator with its latest weights (for
        metrics such as d-roc-auc)."""
        modules = dalle_kit.Trainer.restore(run, self).training.modules
        encoder, judge = modules["text_encoder"], modules["discriminator"]
        encoder.eval()
        judge.eval()

        @torch.inference_mode()
        def logits(images: torch.Tensor, captions) -> torch.Tensor:
            return judge(images.to(run.device), encoder(list(captions))).float().cpu()

        return logits, f"discriminator {run.recipe.parts['discriminator'].info.name}"


@contextlib.contextmanager
def frozen_statistics(*modules: torch.nn.Module):
    """Batch norms' running statistics as they were before the block (a train-mode forward pass updates them)."""
    norms = [m for module in modules for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        for m, buffers in zip(norms, saved, strict=True):
            for k, v in buffers.items():
                getattr(m, k).copy_(v)


@dalle_kit.hookimpl
def register_pipelines(register):
    register(GAN)
