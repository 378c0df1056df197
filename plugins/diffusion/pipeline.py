"""Pipeline `diffusion`: text-conditional denoising diffusion on the core trainer, with the `diffusers` library.

A new model family brought by plugins alone: this module adds the kind ``denoiser`` (through
``register_kinds``, with a conformance check of its own), its part ``unet`` (diffusers'
``UNet2DConditionModel``, cross-attending to the recipe's text encoder and adding the text vector to its
time embedding) and the pipeline. Training (DDPM, Ho et al. 2020): noise from diffusers' ``DDPMScheduler``
with the cosine schedule, ``v_prediction`` targets (or ``epsilon``), mean squared error; captions are dropped with probability
``caption_dropout`` (replaced by a learned null vector) so that sampling can use classifier-free guidance
(Ho and Salimans 2021): ``uncond + guidance_scale * (cond - uncond)``. Sampling: diffusers' DDIM (eta 0)
or DPM-Solver++ multistep, ``sample_steps`` steps, deterministic given the starting noise. An
exponential moving average of the denoiser (the built-in EMA plugin) draws samples and metrics.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn

import dalle_kit
from dalle_kit import param
from dalle_kit import Invalid, finite_positive
from dalle_kit.tools.testing import ConformanceError
from dalle_kit_plugins.diffusion.objective import denoising_loss
from dalle_kit_plugins.diffusion.sampling import guided_denoise, image_schedule


# ---------------------------------------------------------------------------- the kind
class Denoiser(nn.Module, dalle_kit.Part):
    """Predicts the diffusion target: ``forward(noisy[B, C, S, S], timesteps[B] (long), text[B, text_dim]) ->
    [B, C, S, S]`` (the noise, or the velocity, as the pipeline's ``prediction`` says). Built as
    ``cls(config, text_dim=, image_size=, channels=)``; a size it cannot take is a `dalle_kit.UserError`."""

    kind = "denoiser"
    build_context = ("text_dim", "image_size", "channels")

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__()
        self.config, self.text_dim, self.image_size, self.channels = config, text_dim, image_size, channels


def check_denoiser(cls, config=None, **_):
    """Output shaped like the input, finite, and changed by the text vector."""
    torch.manual_seed(0)
    model = cls(config or cls.Config(), text_dim=16, image_size=16, channels=3).eval()
    check_conditioned_prediction(cls, model, torch.randn(2, 3, 16, 16), "a denoiser", "the text vector")


def check_conditioned_prediction(cls, model, x: torch.Tensor, what: str, condition: str) -> None:
    """``model(x, timesteps, c)`` with two random 16-d conditions ``c``: finite, shaped like `x`, and not the same for
    both (a `ConformanceError` naming `what` and the `condition` otherwise). Shared by the kinds that denoise."""
    t = torch.tensor([10, 500])
    with torch.no_grad():
        a, b = model(x, t, torch.randn(2, 16)), model(x, t, torch.randn(2, 16))
    if a.shape != x.shape or not torch.isfinite(a).all():
        raise ConformanceError(
            f"{cls.__name__}: {what} must return a finite tensor shaped like its input {tuple(x.shape)}, "
            f"got {tuple(a.shape)}"
        )
    if torch.allclose(a, b):
        raise ConformanceError(f"{cls.__name__}: {condition} does not change the prediction")


class UNet(Denoiser):
    """diffusers' UNet2DConditionModel: ResNet blocks, self- and cross-attention to the text vector at the lower resolutions."""

    name = "unet"

    @attrs.frozen
    class Config:
        channels: list[int] = param(
            [16, 32, 64],
            "output channels of each resolution level (the image halves between levels)",
            validator=attrs.validators.deep_iterable(attrs.validators.gt(0)),
        )
        attention_levels: int = param(
            1,
            "how many of the lowest-resolution levels cross-attend to the text (and self-attend)",
            validator=attrs.validators.ge(0),
        )
        layers_per_block: int = param(1, "ResNet blocks per level", validator=attrs.validators.gt(0))
        head_dim: int = param(16, "channels per attention head", validator=attrs.validators.gt(0))
        groups: int = param(
            8, "GroupNorm groups (each level's channels must be divisible by it)", validator=attrs.validators.gt(0)
        )

    def __init__(self, config, *, text_dim: int, image_size: int, channels: int):
        super().__init__(config, text_dim=text_dim, image_size=image_size, channels=channels)
        from diffusers import UNet2DConditionModel

        levels = len(config.channels)
        if image_size % 2 ** (levels - 1):
            raise dalle_kit.UserError(
                f"[denoiser] channels has {levels} levels, which halve the image {levels - 1} times, "
                f"but [data] size = {image_size} is not divisible by {2 ** (levels - 1)}; use a size "
                "divisible by it or fewer levels"
            )
        bad = [c for c in config.channels if c % config.groups]
        if bad:
            raise dalle_kit.UserError(
                f"[denoiser] channels {bad} are not divisible by groups = {config.groups}; use multiples of it"
            )
        attention = [i >= levels - config.attention_levels for i in range(levels)]
        self.net = UNet2DConditionModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            block_out_channels=tuple(config.channels),
            layers_per_block=config.layers_per_block,
            cross_attention_dim=text_dim,
            attention_head_dim=config.head_dim,
            norm_num_groups=config.groups,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=text_dim,
        )

    def forward(self, noisy, timesteps, text):
        return self.net(noisy, timesteps, encoder_hidden_states=text.unsqueeze(1), class_labels=text).sample


class NullText(nn.Module):
    """The learned vector that stands for "no caption" (dropped captions while training; the unconditional pass)."""

    def __init__(self, dim: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(dim))

    def forward(self, n: int) -> torch.Tensor:
        return self.vector.expand(n, -1)


# ---------------------------------------------------------------------------- the pipeline
class Diffusion(dalle_kit.Pipeline):
    """Text-conditional DDPM (diffusers schedulers and UNet), classifier-free guidance, DDIM / DPM-Solver sampling, EMA."""

    name = "diffusion"
    sections = {"data": "dataset", "text_encoder": "text_encoder", "denoiser": "denoiser"}
    ema_module = "denoiser"

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        steps: int = param(
            3000, "training iterations (one denoising step on a batch each)", validator=attrs.validators.gt(0)
        )
        lr: float = param(5e-4, "AdamW learning rate (after a linear warmup)", validator=finite_positive)
        warmup: int = param(200, "steps of linear learning-rate warmup", validator=attrs.validators.ge(0))
        weight_decay: float = param(0.0, "AdamW weight decay", validator=attrs.validators.ge(0))
        grad_clip: float = param(1.0, "clip the gradient norm to this (0: off)", validator=attrs.validators.ge(0))
        timesteps: int = param(1000, "diffusion timesteps of the training process", validator=attrs.validators.gt(1))
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = param(
            "squaredcos_cap_v2",
            "noise schedule (diffusers' names; squaredcos_cap_v2 is the cosine schedule of Nichol and Dhariwal 2021)",
        )
        prediction: Literal["epsilon", "v_prediction"] = param(
            "v_prediction",
            "what the denoiser predicts: the velocity (Salimans and Ho 2022) or the noise; with the cosine "
            "schedule the noise's x0 estimate divides by sqrt(alpha_bar(999)) = 5e-5 at the first sampling "
            "step, and a trained noise predictor's samples stayed grey noise (measured), the velocity's x0 "
            "estimate needs no division",
        )
        caption_dropout: float = param(
            0.1,
            "probability of training on the null caption (classifier-free guidance needs > 0)",
            validator=[attrs.validators.ge(0), attrs.validators.le(1)],
        )
        sampler: Literal["ddim", "dpm-solver"] = param(
            "dpm-solver", "sampling scheduler: DDIM (eta 0) or DPM-Solver++ multistep"
        )
        sample_steps: int = param(25, "denoising steps when drawing images", validator=attrs.validators.gt(0))
        guidance_scale: float = param(
            3.0,
            "classifier-free guidance at sampling (1: plain conditional, no second pass)",
            validator=attrs.validators.ge(0),
        )
        ema: float = param(
            0.999,
            "decay of the denoiser's exponential moving average (0: off); samples and metrics use it",
            validator=[attrs.validators.ge(0), attrs.validators.lt(1)],
        )
        ema_start: int = param(
            500,
            "step from which the average moves (it copies the denoiser until then)",
            validator=attrs.validators.ge(0),
        )

        def __attrs_post_init__(self):  # cross-field rule, checked when the recipe is read
            if self.sample_steps > self.timesteps:
                raise Invalid(
                    "sample_steps",
                    f"sample_steps = {self.sample_steps} exceeds timesteps = {self.timesteps}",
                    f"use at most {self.timesteps}",
                )

    def sampling(self) -> str:
        cfg = self.config
        return f"{cfg.sampler}, {cfg.sample_steps} steps, guidance {cfg.guidance_scale:g}"

    def noise_scheduler(self):
        from diffusers import DDPMScheduler

        cfg = self.config
        return DDPMScheduler(
            num_train_timesteps=cfg.timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction,
            clip_sample=False,
        )

    def _build(self, run, data, state, captions=None):
        encoder = run.parts.text_encoder(state, captions)
        denoiser = run.parts.build("denoiser", text_dim=encoder.dim, image_size=data.image_size, channels=data.channels)
        return {"text_encoder": encoder, "denoiser": denoiser, "null_text": NullText(encoder.dim).to(run.device)}

    def setup(self, run, state) -> dalle_kit.Training:
        cfg = self.config
        data = run.parts.dataset()
        train_set = data.load("train")
        modules = self._build(run, data, state, train_set.captions)
        encoder, denoiser, null_text = modules["text_encoder"], modules["denoiser"], modules["null_text"]
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = self.noise_scheduler()
        data_rng, noise_rng = run.rng("data"), run.rng("noise")
        device = run.device
        train_encoder, train_denoiser, train_null = (run.parts.parallel(m) for m in (encoder, denoiser, null_text))

        def train_step(done: int) -> dict[str, float]:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (done + 1) / cfg.warmup) if cfg.warmup else cfg.lr
            real, captions = train_set.batch(torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng))
            real = real.to(device, non_blocking=True)
            noise = torch.randn(real.shape, generator=noise_rng).to(device)
            t = torch.randint(cfg.timesteps, (len(real),), generator=noise_rng).to(device)
            dropped = (torch.rand(len(real), generator=noise_rng) < cfg.caption_dropout).to(device)
            text = torch.where(dropped[:, None], train_null(len(real)), train_encoder(captions))
            loss = denoising_loss(train_denoiser, scheduler, real, noise, t, text, cfg.prediction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            return {"loss": loss.item(), "lr": opt.param_groups[0]["lr"]}

        return dalle_kit.Training(
            divergence_fix="lower [train] lr or add [train] grad_clip",
            modules=modules,
            optimizers={"diffusion": opt},
            train_step=train_step,
            draw=lambda m: self.drawer(m, device),
            extra_state=lambda: {"text_encoder": encoder.extra_state_json()},
        )

    # ------------------------------------------------------------------ sampling
    def drawer(
        self,
        modules,
        device,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
    ):
        """``(prompts, rng) -> images in [-1, 1]`` with the given modules (the EMA denoiser where kept); the settings
        default to the recipe's."""
        cfg = self.config
        steps = steps or cfg.sample_steps
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        kind = sampler or cfg.sampler
        base = self.noise_scheduler().config
        encoder, denoiser, null_text = modules["text_encoder"], modules["denoiser"], modules["null_text"]
        for m in (encoder, denoiser, null_text):
            m.eval()

        @torch.inference_mode()
        def draw(prompts, rng: torch.Generator) -> torch.Tensor:
            n = len(prompts)
            x = torch.randn((n, denoiser.channels, denoiser.image_size, denoiser.image_size), generator=rng).to(device)
            schedule = image_schedule(base, kind, steps)
            x = guided_denoise(denoiser, x, encoder(list(prompts)), null_text(n), schedule, scale)
            return x.clamp(-1, 1).float().cpu()

        return draw


@dalle_kit.hookimpl
def register_kinds(register):
    register(Denoiser, checks=[check_denoiser])


@dalle_kit.hookimpl
def register_parts(register):
    register(UNet)


@dalle_kit.hookimpl
def register_pipelines(register):
    register(Diffusion)
