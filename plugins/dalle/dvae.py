"""Pipeline `dvae`: trains a ``dvae_codec`` (DALL-E's stage 1) on a dataset's images alone.

Each step encodes a batch with the codec's relaxed pass at temperature tau and minimises

    mean squared error per pixel (images in [-1, 1])  +  kl_weight(step) * KL(q(token | image) || uniform)

with Adam. The squared error stands in for the paper's logit-Laplace likelihood (a Gaussian decoder with a fixed
variance, as the `vae` pipeline's); the KL is in nats per token. Both schedules are cosine, as in DALL-E (Ramesh et
al. 2021, appendix A.2): tau falls from ``temperature_start`` to ``temperature_end`` over ``temperature_steps`` and
the KL weight rises from 0 to ``kl_weight`` over ``kl_warmup``. They are functions of the finished steps alone, so a
resumed run continues them exactly; the Gumbel noise comes from the run's stream ``noise``, the batches from ``data``.

On logging steps it adds ``recon_test``, the mean squared error per pixel of a fixed held-out batch (the first
``eval_images`` of the test split) reconstructed through its tokens (encode's argmax, then decode: no relaxation),
``codes_used`` (distinct tokens in that batch's grids) and ``code_perplexity`` (exp of the entropy of their
frequencies). Beside each checkpoint it writes ``reconstructions/step-<n>.png``: the first ``grid_images`` held-out
images above their reconstructions. A dvae run draws no images from prompts (`dalle-kit sample` and ``[eval]
metrics`` refuse it, ``[sample]`` is ignored); the DALL-E transformer stage reads its codec from the run.
"""

from __future__ import annotations

import io
import math

import attrs
import torch
import torch.distributed as dist

import dalle_kit
from dalle_kit import Invalid, adam_betas, finite_positive, param
from dalle_kit.files import atomic_write_bytes
from dalle_kit_plugins.dalle.codec import DVAECodec

_gt0 = attrs.validators.gt(0)
_ge0 = attrs.validators.ge(0)

#: Where the reconstruction grids go, inside the run directory.
RECONSTRUCTIONS = "reconstructions"


class DVAE(dalle_kit.Pipeline):
    """Discrete VAE training: relaxed reconstruction (MSE) + annealed KL to the uniform prior, cosine temperature."""

    name = "dvae"
    sections = {"data": "dataset", "codec": "dvae_codec"}
    draws_images = False

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        steps: int = param(3000, "optimizer steps", validator=_gt0)
        batch_size: int = param(64, "images per step", validator=_gt0)
        lr: float = param(5e-4, "Adam learning rate", validator=finite_positive)
        betas: tuple[float, float] = param((0.9, 0.999), "Adam betas, each in [0, 1)", validator=adam_betas)
        temperature_start: float = param(1.0, "Gumbel-softmax temperature at the first step", validator=finite_positive)
        temperature_end: float = param(
            1 / 16, "temperature reached after temperature_steps (DALL-E: 1/16)", validator=finite_positive
        )
        temperature_steps: int = param(
            2000,
            "steps of the cosine anneal from temperature_start to temperature_end (0: stay at the start)",
            validator=_ge0,
        )
        kl_weight: float = param(
            1e-3,
            "weight of the KL to the uniform prior (nats per token) against the per-pixel squared error",
            validator=_ge0,
        )
        kl_warmup: int = param(
            500, "steps of the cosine ramp of the KL weight from 0 (0: full weight at once)", validator=_ge0
        )
        eval_images: int = param(
            256, "held-out test images for recon_test, codes_used and code_perplexity", validator=_gt0
        )
        grid_images: int = param(8, "held-out images in each reconstruction grid", validator=_gt0)
        log_every: int = param(50, "log losses and the held-out values every this many steps", validator=_gt0)
        checkpoint_every: int = param(
            500, "save a checkpoint (and a reconstruction grid) every this many steps", validator=_gt0
        )

        def __attrs_post_init__(self):
            if self.temperature_end > self.temperature_start:
                raise Invalid(
                    "temperature_end",
                    f"temperature_end = {self.temperature_end} is above temperature_start = {self.temperature_start}",
                    "the temperature anneals downwards: use at most temperature_start",
                )

    # ------------------------------------------------------------------ schedules (functions of the step alone)
    def temperature(self, done: int) -> float:
        """tau for the step after `done` finished steps: cosine from temperature_start to temperature_end."""
        cfg = self.config
        if not cfg.temperature_steps:
            return cfg.temperature_start
        t = min(1.0, done / cfg.temperature_steps)
        return cfg.temperature_end + (cfg.temperature_start - cfg.temperature_end) * 0.5 * (1 + math.cos(math.pi * t))

    def kl_weight_at(self, done: int) -> float:
        """The KL weight for the step after `done` finished steps: cosine ramp from 0 to kl_weight."""
        cfg = self.config
        if not cfg.kl_warmup:
            return cfg.kl_weight
        return cfg.kl_weight * 0.5 * (1 - math.cos(math.pi * min(1.0, done / cfg.kl_warmup)))

    # ------------------------------------------------------------------ training
    def setup(self, run, state: dict | None) -> dalle_kit.Training:
        cfg = self.config
        data = run.parts.dataset()
        train_set, test_set = data.load("train"), data.load("test")
        codec = run.parts.build("codec", image_size=data.image_size, channels=data.channels)
        device = run.device
        opt = torch.optim.Adam(codec.parameters(), lr=cfg.lr, betas=cfg.betas)
        data_rng, noise_rng = run.rng("data"), run.rng("noise")
        held_out = test_set.batch(torch.arange(min(cfg.eval_images, len(test_set))))[0]
        relaxed = run.parts.parallel(RelaxedPass(codec))  # DDP's gradient averaging needs a forward call
        maintains = type(codec).maintain is not DVAECodec.maintain
        codec.train()

        def train_step(done: int) -> dict[str, float]:
            images = train_set.batch(torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng))[0]
            images = images.to(device, non_blocking=True)
            tau, beta = self.temperature(done), self.kl_weight_at(done)
            with torch.no_grad():
                codec.maintain(images, generator=noise_rng)
                if maintains:
                    take_rank0(codec)
            recon, terms = relaxed(images, tau, noise_rng)
            error = (recon.float() - images.float()).square().mean()
            loss = error + sum(beta * v if k == "kl" else v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            terms_logged = {k: v.item() for k, v in terms.items()}
            return {"loss": loss.item(), "recon": error.item(), **terms_logged, "temperature": tau}

        return dalle_kit.Training(
            modules={"codec": codec},
            optimizers={"dvae": opt},
            train_step=train_step,
            log_values=lambda step: held_out_scores(codec, held_out, device),
            before_save=lambda step, state: write_reconstructions(
                codec, held_out[: cfg.grid_images], run.dir / RECONSTRUCTIONS / f"step-{step:08d}.png", device
            ),
            divergence_fix="lower [train] lr",
        )


def take_rank0(module: torch.nn.Module) -> None:
    """In several processes (torchrun), every rank takes rank 0's parameters and buffers: each rank's `maintain`
    saw a batch of its own and may have re-seeded codebook entries differently. A no-op in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        params = list(module.parameters())
        flat = torch.nn.utils.parameters_to_vector(params)  # one collective for all the weights
        dist.broadcast(flat, src=0)
        for param, value in zip(params, flat.split([p.numel() for p in params])):
            param.copy_(value.view_as(param))  # in place: DDP and the optimizer keep their tensors
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class RelaxedPass(torch.nn.Module):
    """``codec.relaxed`` as a module's forward, so that the pass can run under `run.parts.parallel`."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, images, temperature: float, generator: torch.Generator):
        return self.codec.relaxed(images, temperature=temperature, generator=generator)


def _eval(codec):
    """Switch `codec` to eval mode; returns how to switch it back."""
    mode = codec.training
    codec.eval()
    return lambda: codec.train(mode)


@torch.no_grad()
def held_out_scores(codec, images: torch.Tensor, device) -> dict[str, float]:
    """recon_test (squared error per pixel through the tokens), codes_used and code_perplexity on `images`."""
    restore = _eval(codec)
    try:
        images = images.to(device)
        ids = codec.encode(images)
        error = (codec.decode(ids).float() - images.float()).square().mean().item()
    finally:
        restore()
    counts = torch.bincount(ids.flatten().cpu(), minlength=codec.vocab_size).float()
    p = counts[counts > 0] / counts.sum()
    return {
        "recon_test": error,
        "codes_used": int((counts > 0).sum()),
        "code_perplexity": float(torch.exp(-(p * p.log()).sum())),
    }


@torch.no_grad()
def write_reconstructions(codec, images: torch.Tensor, path, device) -> None:
    """A PNG of `images` (top row) above their reconstructions through the tokens (bottom row), each image shown at
    64 px or more (nearest-neighbour)."""
    from PIL import Image
    from torchvision.utils import make_grid

    restore = _eval(codec)
    try:
        recon = codec(images.to(device)).float().cpu()
    finally:
        restore()
    both = torch.cat([images.float(), recon]).clamp(-1, 1)
    scale = max(1, 64 // images.shape[-1])
    both = torch.nn.functional.interpolate(both, scale_factor=scale, mode="nearest") if scale > 1 else both
    grid = make_grid(dalle_kit.to_uint8_images(both), nrow=len(images), padding=2, pad_value=255)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@dalle_kit.hookimpl
def register_pipelines(register):
    register(DVAE)
