"""Pipeline `gan`: text-conditional adversarial training, a D step then a G step each iteration.

Wires a dataset, a text encoder, a generator, a discriminator and a loss. A trainable text
encoder is optimised with the discriminator. Resuming restores weights, optimizers, the step
counter and every RNG the loop draws from, so a stopped and resumed run ends where an
uninterrupted one would.
"""

from __future__ import annotations

import math

import attrs
import torch

import dalle_kit
from dalle_kit import param


def _positive(_, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value}")


class GAN(dalle_kit.Pipeline):
    """Adversarial training: Adam, D step then G step, optional gradient-norm clipping."""

    name = "gan"
    sections = {
        "data": "dataset",
        "text_encoder": "text_encoder",
        "generator": "generator",
        "discriminator": "discriminator",
        "loss": "loss",
    }

    @attrs.frozen
    class Config:
        steps: int = param(3000, "training iterations (one D step and one G step each)", validator=attrs.validators.gt(0))
        batch_size: int = param(64, "images per step", validator=attrs.validators.gt(0))
        lr: float = param(2e-4, "Adam learning rate of the generator", validator=_positive)
        lr_d: float | None = param(None, "Adam learning rate of the discriminator (default: lr)", validator=_positive)
        betas: tuple[float, float] = param((0.5, 0.999), "Adam betas")
        grad_clip: float = param(0.0, "clip each network's gradient norm to this (0: off)", validator=attrs.validators.ge(0))
        matching_aware: bool = param(False, "also show D real images with mismatched captions as negatives (GAN-INT-CLS, Reed et al. 2016)")
        log_every: int = param(25, "write losses to metrics.jsonl every this many steps", validator=attrs.validators.gt(0))
        checkpoint_every: int = param(500, "save a checkpoint every this many steps", validator=attrs.validators.gt(0))

    # ------------------------------------------------------------------ building
    def _build(self, run, data, state: dict | None, train_captions=None):
        encoder = run.build("text_encoder")
        if state is not None:
            encoder.load_extra_state_json(state["extra"]["text_encoder"])
        else:
            encoder.fit(train_captions)
        encoder.to(run.device)
        context = dict(text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        generator = run.build("generator", **context)
        return encoder, generator, context

    def train(self, run) -> None:
        cfg = self.config
        state = run.load_checkpoint()
        data = run.build_dataset()
        train_set = data.load("train")
        encoder, generator, context = self._build(run, data, state, train_set.captions)
        discriminator = run.build("discriminator", **context)
        loss = run.build("loss")
        opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        d_params = list(discriminator.parameters()) + [p for p in encoder.parameters() if p.requires_grad]
        opt_d = torch.optim.Adam(d_params, lr=cfg.lr_d or cfg.lr, betas=cfg.betas)
        data_rng = torch.Generator().manual_seed(run.recipe.seed + 1)
        noise_rng = torch.Generator().manual_seed(run.recipe.seed + 2)
        modules = {"generator": generator, "discriminator": discriminator, "text_encoder": encoder}
        optimizers = {"g": opt_g, "d": opt_d}

        step = 0
        if state is not None:
            for key, module in modules.items():
                module.load_state_dict(state["models"][key])
            for key, opt in optimizers.items():
                opt.load_state_dict(state["optim"][key])
            torch.set_rng_state(state["rng"]["torch"])
            data_rng.set_state(state["rng"]["data"])
            noise_rng.set_state(state["rng"]["noise"])
            step = state["step"]
            run.truncate_metrics(step)

        def checkpoint():
            run.save_checkpoint(step, {
                "models": {k: m.state_dict() for k, m in modules.items()},
                "extra": {"text_encoder": encoder.extra_state_json()},
                "optim": {k: o.state_dict() for k, o in optimizers.items()},
                "rng": {"torch": torch.get_rng_state(), "data": data_rng.get_state(), "noise": noise_rng.get_state()},
            })

        prompts = run.recipe.sample.all_prompts()
        sample_every = run.recipe.sample.every
        device = run.device
        bar = run.progress(cfg.steps, initial=step)
        while step < cfg.steps:
            idx = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            real, captions = train_set.batch(idx)
            real = real.to(device, non_blocking=True)
            z = generator.sample_latent(cfg.batch_size, noise_rng, device)

            # D step: real pairs up, generated pairs down (the text encoder learns with D).
            text = encoder(captions)
            fake = generator(z, text.detach())
            d_real = discriminator(real, text)
            d_fake = discriminator(fake.detach(), text)
            if cfg.matching_aware:  # real images with another sample's caption count as fakes, half the negatives
                d_wrong = discriminator(real, text.roll(1, dims=0))
                d_loss = loss.discriminator_loss(d_real, torch.cat([d_fake, d_wrong]))
            else:
                d_loss = loss.discriminator_loss(d_real, d_fake)
            penalty = loss.penalty(discriminator, real, fake.detach(), text)
            if penalty is not None:
                d_loss = d_loss + penalty
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(d_params, cfg.grad_clip)
            opt_d.step()

            # G step against the updated D.
            discriminator.requires_grad_(False)
            g_loss = loss.generator_loss(discriminator(fake, text.detach()))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(generator.parameters(), cfg.grad_clip)
            opt_g.step()
            discriminator.requires_grad_(True)

            step += 1
            losses = {"loss_d": d_loss.item(), "loss_g": g_loss.item()}
            if not all(math.isfinite(v) for v in losses.values()):
                checkpoint()
                raise dalle_kit.UserError(f"step {step}: loss is not finite ({losses}); lower [train] lr or add grad_clip "
                                          f"(checkpoint kept in {run.dir})")
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.log(step, **losses, d_real=d_real.mean().item(), d_fake=d_fake.mean().item())
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            bar.update(1)
            if (sample_every and step % sample_every == 0) or step == cfg.steps:
                self._sample_grid(run, step, encoder, generator, prompts)
            if run.evaluate_due(step, cfg.steps):
                checkpoint()  # metrics that read weights (d-roc-auc) see this step's
                run.evaluate(step, self._draw(encoder, generator, device))
                generator.train()
                encoder.train()
            stop = run.should_stop(step)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                checkpoint()
            if stop:
                bar.write(f"stopped at step {step}; continue with: dalle-kit run --resume {run.dir}")
                break
        bar.close()

    def _sample_grid(self, run, step, encoder, generator, prompts) -> None:
        draw = self._draw(encoder, generator, run.device)
        n = run.recipe.sample.per_prompt
        images = draw([p for p in prompts for _ in range(n)], torch.Generator().manual_seed(run.recipe.seed + 3))
        run.save_samples(step, images, prompts)
        generator.train()
        encoder.train()

    @staticmethod
    def _draw(encoder, generator, device):
        encoder.eval()
        generator.eval()

        @torch.inference_mode()
        def draw(prompts, rng: torch.Generator) -> torch.Tensor:
            z = generator.sample_latent(len(prompts), rng, device)
            return generator(z, encoder(prompts)).float().cpu()

        return draw

    def _load(self, run):
        """(checkpoint, text encoder, generator, context) with the run's latest weights."""
        state = run.load_checkpoint(prefixes=("models", "extra"))
        if state is None:
            raise dalle_kit.UserError(f"{run.dir}: no checkpoint yet; train first with dalle-kit run")
        encoder, generator, context = self._build(run, run.build_dataset(), state)
        encoder.load_state_dict(state["models"]["text_encoder"])
        generator.load_state_dict(state["models"]["generator"])
        return state, encoder, generator, context

    def sampler(self, run):
        _, encoder, generator, _ = self._load(run)
        return self._draw(encoder, generator, run.device)

    def discriminator(self, run):
        """``(images in [-1, 1], captions) -> logits`` from the run's latest weights (for metrics such as d-roc-auc)."""
        state, encoder, _, context = self._load(run)
        judge = run.build("discriminator", **context)
        judge.load_state_dict(state["models"]["discriminator"])
        encoder.eval()
        judge.eval()

        @torch.inference_mode()
        def logits(images: torch.Tensor, captions) -> torch.Tensor:
            return judge(images.to(run.device), encoder(list(captions))).float().cpu()

        return logits


@dalle_kit.hookimpl
def register_pipelines(register):
    register(GAN)
