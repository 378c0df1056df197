"""Pipeline `dalle`: DALL-E's stage 2 (Ramesh et al. 2021) on the tokens of a trained `dvae` run.

``[train] codec_run`` names a finished `dvae` run (a run directory, or its name prefix meaning its newest finished
run; the run records the directory it resolved to). Its codec, frozen, turns every training image into a grid of
image tokens once, when training starts. A `TokenTransformer` then learns the sequence caption tokens (open_clip's
BPE, ``text_len`` of them) followed by image tokens, by next-token cross-entropy; as in DALL-E the caption
positions weigh ``text_weight`` (1/8) and the image positions 1 - ``text_weight`` (7/8), padding excluded.

Drawing: the prompt's tokens, then ``image_len`` image tokens sampled one at a time at ``temperature`` from the
``top_k`` most likely, decoded by the codec. No classifier-free guidance. With ``rerank = N`` and a
``clip_run`` (a `clip-pretrain` run on the same data), each image is the best of N drawn for its prompt by that
CLIP's image-text similarity: DALL-E's re-ranking, with the toolkit's own CLIP.
"""

from __future__ import annotations

import functools
import attrs
import torch
import torch.nn.functional as F

import dalle_kit
from dalle_kit import adam_betas, finite_positive, hints, param
from dalle_kit_plugins.common.rerank import best_of
from dalle_kit_plugins.common.runs import pin_runs
from dalle_kit_plugins.dalle.transformer import CaptionTokens, TokenTransformer

_gt0 = attrs.validators.gt(0)


class DALLE(dalle_kit.Pipeline):
    """Autoregressive transformer over BPE caption tokens then dVAE image tokens; top-k sampling; CLIP re-ranking."""

    name = "dalle"
    sections = {"data": "dataset"}

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        codec_run: str = param("", "the finished dvae run whose codec gives the image tokens (required)")
        steps: int = param(4000, "optimizer steps", validator=_gt0)
        batch_size: int = param(64, "caption-image pairs per step", validator=_gt0)
        lr: float = param(5e-4, "Adam learning rate", validator=finite_positive)
        betas: tuple[float, float] = param((0.9, 0.95), "Adam betas, each in [0, 1)", validator=adam_betas)
        text_len: int = param(16, "caption tokens (longer captions are cut, shorter ones padded)", validator=_gt0)
        width: int = param(256, "transformer width", validator=_gt0)
        depth: int = param(4, "transformer blocks", validator=_gt0)
        heads: int = param(4, "attention heads (must divide width)", validator=_gt0)
        text_weight: float = param(
            0.125,
            "weight of the caption positions' loss; the image positions weigh 1 - text_weight (DALL-E: 1/8)",
            validator=[attrs.validators.ge(0), attrs.validators.le(1)],
        )
        temperature: float = param(1.0, "sampling temperature", validator=finite_positive)
        top_k: int = param(
            32, "sample each image token from the top_k most likely (0: all)", validator=attrs.validators.ge(0)
        )
        rerank: int = param(
            1, "draw this many images per prompt and keep the one clip_run's CLIP prefers", validator=_gt0
        )
        clip_run: str = param("", "a clip-pretrain run for rerank (its CLIP scores image-caption pairs)")

        def __attrs_post_init__(self):
            if self.width % self.heads:
                raise dalle_kit.Invalid(
                    "heads", f"heads = {self.heads} does not divide width = {self.width}", "use a divisor of width"
                )
            if self.rerank > 1 and not self.clip_run:
                raise dalle_kit.Invalid(
                    "rerank",
                    f"rerank = {self.rerank} needs a CLIP to rank with",
                    'set clip_run = "runs/<a clip-pretrain run>"',
                )

    @classmethod
    def pin(cls, config):
        """codec_run and clip_run fixed to the run directories they name now."""
        return pin_runs(config, ("codec_run", "clip_run"))

    def check(self, image_size: int, channels: int, text_dim: int | None) -> None:
        if not self.config.codec_run:
            raise dalle_kit.UserError(
                '[train] codec_run is empty: name the dvae run whose tokens to model, e.g. codec_run = "runs/shapes-dvae" '
                f"(train it first: {hints.dalle_kit('run shapes-dvae')})"
            )

    def sampling(self) -> str:
        cfg = self.config
        how = f"top-{cfg.top_k}" if cfg.top_k else "all tokens"
        text = f"{how}, temperature {cfg.temperature:g}"
        return text + (f", best of {cfg.rerank} by CLIP {cfg.clip_run}" if cfg.rerank > 1 else "")

    # ------------------------------------------------------------------ building
    def codec(self, run):
        """The frozen codec of ``codec_run``, in eval mode on the run's device."""
        source = dalle_kit.Run.open(
            dalle_kit.resolve_run_dir(self.config.codec_run, what="[train] codec_run"), run.registry, quiet=True
        )
        if source.recipe.pipeline.info.name != "dvae":
            raise dalle_kit.UserError(
                f"[train] codec_run '{self.config.codec_run}' is a '{source.recipe.pipeline.info.name}' run; "
                "name a dvae run (e.g. runs/shapes-dvae)"
            )
        pipeline = source.recipe.pipeline.info.cls(source.recipe.train)
        codec = dalle_kit.Trainer.restore(source, pipeline).training.modules["codec"]
        return codec.eval().requires_grad_(False).to(run.device)

    def setup(self, run, state: dict | None) -> dalle_kit.Training:
        cfg = self.config
        device = run.device
        data = run.parts.dataset()
        train_set = data.load("train")
        codec = self.codec(run)
        saved = ((state or {}).get("extra") or {}).get("caption_tokens")
        vocab = CaptionTokens(saved) if saved is not None else CaptionTokens.fit(train_set.captions)
        h, w = codec.grid
        model = TokenTransformer(len(vocab), codec.vocab_size, cfg.text_len, h * w, cfg.width, cfg.depth, cfg.heads).to(
            device
        )
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
        data_rng = run.rng("data")
        with torch.no_grad():  # every training image's tokens, once
            image_ids = torch.cat(
                [
                    codec.encode(train_set.batch(torch.arange(i, min(i + 500, len(train_set))))[0].to(device)).cpu()
                    for i in range(0, len(train_set), 500)
                ]
            ).flatten(1)
        text_ids = vocab.ids(train_set.captions, cfg.text_len)
        stepper = run.parts.parallel(model)

        def train_step(done: int) -> dict[str, float]:
            pick = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            seq = model.sequence(text_ids[pick], image_ids[pick]).to(device)
            logits = stepper(seq[:, :-1]).float()
            target = seq[:, 1:]
            loss_all = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, n-1]
            n_text = cfg.text_len - 1
            text_loss, text_target = loss_all[:, :n_text], target[:, :n_text]
            real = text_target != 0  # padding is not predicted
            text_term = (text_loss * real).sum() / real.sum().clamp_min(1)
            image_term = loss_all[:, n_text:].mean()
            loss = cfg.text_weight * text_term + (1 - cfg.text_weight) * image_term
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item(), "loss_text": text_term.item(), "loss_image": image_term.item()}

        clip = functools.cache(self.clip)  # loaded once a run, on its first re-ranked draw, not at every grid

        def draw(modules):
            transformer = modules["transformer"].eval()
            judge = clip() if cfg.rerank > 1 else None

            @torch.inference_mode()
            def images(prompts, rng: torch.Generator) -> torch.Tensor:
                text = vocab.ids(list(prompts), cfg.text_len).to(device)
                return best_of(
                    cfg.rerank,
                    lambda: (
                        codec.decode(transformer.sample(text, rng, cfg.temperature, cfg.top_k).view(len(prompts), h, w))
                        .float()
                        .cpu()
                    ),
                    lambda drawn: clip_scores(judge, drawn, prompts),
                )

            return images

        return dalle_kit.Training(
            modules={"transformer": model},
            optimizers={"transformer": opt},
            train_step=train_step,
            draw=draw,
            extra_state=lambda: {"caption_tokens": vocab.pieces},
            divergence_fix="lower [train] lr",
        )

    def clip(self):
        from dalle_kit_plugins.clip.models import load_clip

        return load_clip("", self.config.clip_run, key="[train] clip_run")


def clip_scores(clip, images: torch.Tensor, prompts) -> torch.Tensor:
    """The CLIP's image-caption similarity for each image in [-1, 1] and its prompt."""
    from dalle_kit_plugins.clip.score import scores

    return scores(clip, dalle_kit.to_uint8_images(images), list(prompts))


@dalle_kit.hookimpl
def register_pipelines(register):
    register(DALLE)
