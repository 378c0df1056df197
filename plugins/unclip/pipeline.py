"""Pipeline `unclip`: DALL-E 2 (Ramesh et al. 2022) on the toolkit's own CLIP.

``[train] clip_run`` names a finished `clip-pretrain` run on the same data. Its CLIP, frozen, embeds every training
image and caption once, when training starts (unit vectors scaled by sqrt(D), so each component has unit
variance, as the diffusion models expect). Two models then learn side by side, one batch for both each step:

- the **prior** (the recipe's ``[prior]``, kind ``embedding_prior``): denoising diffusion from the caption's CLIP
  text embedding to the image's CLIP embedding, predicting the clean embedding (DALL-E 2's choice); the text
  embedding is dropped with probability ``caption_dropout`` for classifier-free guidance;
- the **decoder** (``[denoiser]``, the diffusion family's kind, e.g. diffusers' UNet): denoising diffusion of the
  image conditioned on its CLIP image embedding alone, dropped with probability ``embedding_dropout``. DALL-E 2's
  decoder also reads the caption (GLIDE's text tokens); this one does not, so everything the image owes to the
  caption passes through the prior's embedding.

Drawing: prompt -> CLIP text embedding -> the prior's image embedding (DDIM, ``prior_steps``, guidance
``prior_guidance``, rescaled to the norm of the training embeddings) -> the decoder's image (``sampler``,
``sample_steps``, guidance ``guidance_scale``). **Image variations**: with ``variation_of`` set to an image file
(``sample RUN "a variation" --set train.variation_of=cat.png``), the decoder starts from that image's CLIP embedding
instead of the prior's, so each draw is the same embedding decoded from fresh noise; prompts then only label rows.
An exponential moving average of the decoder (the built-in EMA plugin) draws samples and metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import Invalid, finite_positive, hints, param
from dalle_kit_plugins.common.runs import pin_runs
from dalle_kit_plugins.diffusion.objective import denoising_loss
from dalle_kit_plugins.diffusion.pipeline import NullText
from dalle_kit_plugins.diffusion.sampling import guided_denoise, image_schedule

_gt0 = attrs.validators.gt(0)
_share = [attrs.validators.ge(0), attrs.validators.le(1)]


def _image_file(instance, attribute, value):
    """attrs validator: '' or an existing file (the image of ``variation_of``)."""
    if value and not Path(value).expanduser().is_file():
        raise Invalid(attribute.name, f"'{value}' is not a file", "name an image file (PNG, JPEG, ...) that exists")


class UnCLIP(dalle_kit.Pipeline):
    """CLIP text embedding -> diffusion prior -> CLIP image embedding -> diffusion decoder; image variations."""

    name = "unclip"
    sections = {"data": "dataset", "prior": "embedding_prior", "denoiser": "denoiser"}
    ema_module = "denoiser"

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        clip_run: str = param("", "the finished clip-pretrain run whose CLIP embeds captions and images (required)")
        steps: int = param(
            3000, "training iterations (a prior step and a decoder step on one batch each)", validator=_gt0
        )
        lr: float = param(5e-4, "AdamW learning rate of the decoder (after a linear warmup)", validator=finite_positive)
        prior_lr: float = param(
            1e-3, "AdamW learning rate of the prior (after the same warmup)", validator=finite_positive
        )
        warmup: int = param(200, "steps of linear learning-rate warmup", validator=attrs.validators.ge(0))
        grad_clip: float = param(
            1.0, "clip each model's gradient norm to this (0: off)", validator=attrs.validators.ge(0)
        )
        timesteps: int = param(1000, "diffusion timesteps of both training processes", validator=attrs.validators.gt(1))
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = param(
            "squaredcos_cap_v2", "noise schedule of both models (diffusers' names; the cosine schedule by default)"
        )
        prediction: Literal["epsilon", "v_prediction"] = param(
            "v_prediction", "what the decoder predicts: the velocity or the noise (the prior predicts the embedding)"
        )
        caption_dropout: float = param(
            0.1, "probability of training the prior on the null caption (its guidance needs > 0)", validator=_share
        )
        embedding_dropout: float = param(
            0.1, "probability of training the decoder on the null embedding (its guidance needs > 0)", validator=_share
        )
        prior_steps: int = param(64, "DDIM steps of the prior when drawing", validator=_gt0)
        prior_guidance: float = param(
            1.0, "classifier-free guidance of the prior at sampling (1: plain)", validator=attrs.validators.ge(0)
        )
        sampler: Literal["ddim", "dpm-solver"] = param("dpm-solver", "the decoder's sampling scheduler")
        sample_steps: int = param(25, "denoising steps of the decoder when drawing", validator=_gt0)
        guidance_scale: float = param(
            3.0, "classifier-free guidance of the decoder at sampling (1: plain)", validator=attrs.validators.ge(0)
        )
        variation_of: str = param(
            "",
            "draw variations of this image file (its CLIP embedding, decoded afresh) instead of following the prompts",
            validator=_image_file,
        )
        ema: float = param(
            0.999,
            "decay of the decoder's exponential moving average (0: off)",
            validator=[attrs.validators.ge(0), attrs.validators.lt(1)],
        )
        ema_start: int = param(500, "step from which the average moves", validator=attrs.validators.ge(0))

        def __attrs_post_init__(self):
            for key in ("sample_steps", "prior_steps"):
                if getattr(self, key) > self.timesteps:
                    raise Invalid(
                        key,
                        f"{key} = {getattr(self, key)} exceeds timesteps = {self.timesteps}",
                        f"use at most {self.timesteps}",
                    )

    @classmethod
    def pin(cls, config):
        """clip_run fixed to the run directory it names now."""
        return pin_runs(config, ("clip_run",))

    def check(self, image_size: int, channels: int, text_dim: int | None) -> None:
        if not self.config.clip_run:
            raise dalle_kit.UserError(
                "[train] clip_run is empty: name the clip-pretrain run whose CLIP to invert, e.g. clip_run = "
                f'"runs/shapes-clip-pretrain" (train it first: {hints.dalle_kit("run shapes-clip-pretrain")})'
            )

    def sampling(self) -> str:
        cfg = self.config
        prior = f"prior DDIM {cfg.prior_steps} steps, guidance {cfg.prior_guidance:g}"
        decoder = f"decoder {cfg.sampler} {cfg.sample_steps} steps, guidance {cfg.guidance_scale:g}"
        clip = f"; embeddings of CLIP {cfg.clip_run}"
        return (f"variations of {cfg.variation_of}, {decoder}" if cfg.variation_of else f"{prior}; {decoder}") + clip

    def noise_scheduler(self, prediction: str):
        from diffusers import DDPMScheduler

        cfg = self.config
        return DDPMScheduler(
            num_train_timesteps=cfg.timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=prediction,
            clip_sample=False,
        )

    # ------------------------------------------------------------------ the frozen CLIP
    def clip(self, run):
        """The clip_run's CLIP, frozen, on the run's device."""
        from dalle_kit_plugins.clip.models import load_clip

        loaded = load_clip("", self.config.clip_run, key="[train] clip_run")
        loaded.model.eval().requires_grad_(False).to(run.device)
        return loaded

    def setup(self, run, state) -> dalle_kit.Training:
        from dalle_kit_plugins.clip.models import preprocess_images

        cfg = self.config
        device = run.device
        data = run.parts.dataset()
        train_set = data.load("train")
        clip = self.clip(run)

        @torch.no_grad()
        def embed_images(images: torch.Tensor) -> torch.Tensor:
            x = preprocess_images(images, clip.preprocess_cfg).to(device)
            return scaled(clip.model.encode_image(x))

        @torch.no_grad()
        def embed_texts(captions: list[str]) -> torch.Tensor:
            return scaled(clip.model.encode_text(clip.tokenizer(captions).to(device)))

        def scaled(x: torch.Tensor) -> torch.Tensor:  # unit vectors * sqrt(D): unit variance per component
            return F.normalize(x.float(), dim=-1) * x.shape[-1] ** 0.5

        dim = int(embed_texts([""]).shape[-1])
        chunks = [torch.arange(i, min(i + 500, len(train_set))) for i in range(0, len(train_set), 500)]
        image_emb = torch.cat([embed_images(train_set.batch(c)[0]) for c in chunks])  # every training pair, once
        distinct = list(dict.fromkeys(train_set.captions))  # captions repeat: each one encoded once
        where = {caption: i for i, caption in enumerate(distinct)}
        by_caption = torch.cat([embed_texts(distinct[i : i + 500]) for i in range(0, len(distinct), 500)])
        text_emb = by_caption[torch.tensor([where[c] for c in train_set.captions])]

        prior = run.parts.build("prior", dim=dim)
        denoiser = run.parts.build("denoiser", text_dim=dim, image_size=data.image_size, channels=data.channels)
        null_text, null_image = NullText(dim).to(device), NullText(dim).to(device)
        modules = {"prior": prior, "denoiser": denoiser, "null_text": null_text, "null_image": null_image}
        prior_params = [*prior.parameters(), *null_text.parameters()]
        decoder_params = [*denoiser.parameters(), *null_image.parameters()]
        opts = {
            "prior": torch.optim.AdamW(prior_params, lr=cfg.prior_lr),
            "decoder": torch.optim.AdamW(decoder_params, lr=cfg.lr),
        }
        base_lr = {"prior": cfg.prior_lr, "decoder": cfg.lr}
        prior_schedule, image_noise = self.noise_scheduler("sample"), self.noise_scheduler(cfg.prediction)
        data_rng, noise_rng = run.rng("data"), run.rng("noise")
        train_prior, train_denoiser = run.parts.parallel(prior), run.parts.parallel(denoiser)

        def dropped(condition: torch.Tensor, null: NullText, p: float) -> torch.Tensor:
            drop = (torch.rand(len(condition), generator=noise_rng) < p).to(device)
            return torch.where(drop[:, None], null(len(condition)), condition)

        def step(name: str, params, loss: torch.Tensor) -> None:
            opt = opts[name]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()

        def train_step(done: int) -> dict[str, float]:
            warm = min(1.0, (done + 1) / cfg.warmup) if cfg.warmup else 1.0
            for name, opt in opts.items():
                for group in opt.param_groups:
                    group["lr"] = base_lr[name] * warm
            pick = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            real = train_set.batch(pick)[0].to(device, non_blocking=True)
            image, text = image_emb[pick].to(device), text_emb[pick].to(device)
            # the prior: text embedding -> image embedding
            noise = torch.randn(image.shape, generator=noise_rng).to(device)
            t = torch.randint(cfg.timesteps, (len(image),), generator=noise_rng).to(device)
            condition = dropped(text, null_text, cfg.caption_dropout)
            prior_loss = denoising_loss(train_prior, prior_schedule, image, noise, t, condition, "sample")
            step("prior", prior_params, prior_loss)
            # the decoder: image embedding -> image
            noise = torch.randn(real.shape, generator=noise_rng).to(device)
            t = torch.randint(cfg.timesteps, (len(real),), generator=noise_rng).to(device)
            condition = dropped(image, null_image, cfg.embedding_dropout)
            decoder_loss = denoising_loss(train_denoiser, image_noise, real, noise, t, condition, cfg.prediction)
            step("decoder", decoder_params, decoder_loss)
            return {
                "loss": decoder_loss.item(),
                "loss_prior": prior_loss.item(),
                "lr": opts["decoder"].param_groups[0]["lr"],
            }

        def draw(modules):
            prior, denoiser = modules["prior"].eval(), modules["denoiser"].eval()
            null_text, null_image = modules["null_text"], modules["null_image"]
            variation = self.variation_embedding(embed_images, data.image_size, data.channels)

            @torch.inference_mode()
            def images(prompts, rng: torch.Generator) -> torch.Tensor:
                n = len(prompts)
                if variation is not None:
                    embedding = variation.expand(n, -1)
                else:
                    z = torch.randn((n, dim), generator=rng).to(device)
                    schedule = embedding_schedule(prior_schedule.config, cfg.prior_steps)
                    embedding = guided_denoise(
                        prior, z, embed_texts(list(prompts)), null_text(n), schedule, cfg.prior_guidance
                    )
                    embedding = F.normalize(embedding, dim=-1) * dim**0.5
                x = torch.randn((n, data.channels, data.image_size, data.image_size), generator=rng).to(device)
                schedule = image_schedule(image_noise.config, cfg.sampler, cfg.sample_steps)
                x = guided_denoise(denoiser, x, embedding, null_image(n), schedule, cfg.guidance_scale)
                return x.clamp(-1, 1).float().cpu()

            return images

        return dalle_kit.Training(
            modules=modules,
            optimizers=opts,
            train_step=train_step,
            draw=draw,
            divergence_fix="lower [train] lr and prior_lr, or add [train] grad_clip",
        )

    def variation_embedding(self, embed_images, size: int, channels: int) -> torch.Tensor | None:
        """The CLIP embedding [1, D] of ``variation_of`` as the dataset would hold it (resized, alpha on white), or None."""
        path = self.config.variation_of
        if not path:
            return None
        from dalle_kit_plugins.data.imagefolder import decode

        try:
            pixels = decode(Path(path).expanduser(), size, channels)
        except Exception as exc:  # PIL's errors have no common base: any failure to read is the file's fault
            raise dalle_kit.UserError(
                f"[train] variation_of '{path}': not a readable image ({type(exc).__name__}: {exc}); "
                "name a PNG or JPEG file"
            ) from None
        return embed_images(torch.from_numpy(pixels.copy())[None])


def embedding_schedule(base_config, steps: int):
    """DDIM (eta 0) over the prior's training schedule, `steps` steps from the last ("trailing"), no clipping
    (embeddings are not bounded like pixels)."""
    from diffusers import DDIMScheduler

    schedule = DDIMScheduler.from_config(base_config, timestep_spacing="trailing", clip_sample=False)
    schedule.set_timesteps(steps)
    return schedule


@dalle_kit.hookimpl
def register_pipelines(register):
    register(UnCLIP)
