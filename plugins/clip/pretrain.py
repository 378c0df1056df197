"""Pipeline `clip-pretrain`: contrastive image-text pre-training of an open_clip CLIP from scratch.

Trains on the dataset's (image, caption) pairs with open_clip's `ClipLoss` (symmetric InfoNCE, learnable
logit scale clamped at 100 as in CLIP), AdamW with linear warmup then cosine decay, no weight decay on
gains, biases, embeddings and the logit scale. Images enter at the dataset's own size, normalised with
open_clip's default mean and std. Every ``log_every`` steps it logs the loss and ``contrastive_acc``:
image -> text top-1 on a fixed batch of held-out test pairs, a retrieved caption counting as right when
its text equals the true caption (captions repeat in shapes).

Besides the usual checkpoints (exact resume, as `gan`), the run directory holds an open_clip folder:
``open_clip_config.json`` (model and preprocess config, written at the start) and
``open_clip_model.safetensors`` (the model weights of the latest checkpoint, rewritten with each). Use the
run as ``[text_encoder] name = "clip"``, ``pretrained = "runs/<name>"``, or as clip-score's weights; open_clip
itself loads it with ``open_clip.create_model("local-dir:RUN_DIR")``. The pipeline draws no images.
"""

from __future__ import annotations

import json
import math

import attrs
import torch
from safetensors.torch import save

import dalle_kit
from dalle_kit import param
from dalle_kit.files import atomic_write_bytes, atomic_write_text
from dalle_kit import finite_nonnegative, finite_positive
from dalle_kit_plugins.clip.models import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    default_preprocess,
    instantiate,
    preprocess_images,
    read_config,
    tiny_config,
    tokenizer_for,
)

_gt0 = attrs.validators.gt(0)


class ClipPretrain(dalle_kit.Pipeline):
    """CLIP contrastive pre-training (AdamW, warmup + cosine); the run is then a `clip` text encoder's weights."""

    name = "clip-pretrain"
    sections = {"data": "dataset"}
    draws_images = False

    @attrs.frozen
    class Config(dalle_kit.TrainConfig):
        model: str = param(
            "", "open_clip architecture name or JSON model config; '' = the tiny CLIP set by the fields below"
        )
        embed_dim: int = param(128, "tiny CLIP: size of the joint embedding (the text encoder's dim)", validator=_gt0)
        width: int = param(128, "tiny CLIP: width of both transformers", validator=_gt0)
        vision_layers: int = param(3, "tiny CLIP: ViT layers", validator=_gt0)
        text_layers: int = param(2, "tiny CLIP: text transformer layers", validator=_gt0)
        patch_size: int = param(8, "tiny CLIP: ViT patch side in pixels", validator=_gt0)
        context_length: int = param(
            16, "tiny CLIP: caption tokens, longer captions are cut (shapes needs 11)", validator=_gt0
        )
        steps: int = param(500, "optimizer steps", validator=_gt0)
        batch_size: int = param(
            128, "image-text pairs per step (the contrastive negatives)", validator=attrs.validators.gt(1)
        )
        lr: float = param(1e-3, "peak AdamW learning rate", validator=finite_positive)
        weight_decay: float = param(
            0.1, "AdamW weight decay (not on gains, biases, embeddings, logit scale)", validator=finite_nonnegative
        )
        warmup: int = param(
            50, "steps of linear learning-rate warmup before the cosine decay", validator=attrs.validators.ge(0)
        )
        eval_pairs: int = param(256, "held-out test pairs for contrastive_acc", validator=attrs.validators.gt(1))
        log_every: int = param(25, "log loss and contrastive_acc every this many steps", validator=_gt0)
        checkpoint_every: int = param(
            250, "save a checkpoint (and the open_clip weights) every this many steps", validator=_gt0
        )

    # ------------------------------------------------------------------ architecture
    def architecture(self, image_size: int) -> tuple[dict, dict]:
        """(open_clip model config, preprocess config) for images of `image_size` pixels."""
        cfg = self.config
        if not cfg.model:
            model_cfg = tiny_config(
                cfg.embed_dim,
                cfg.width,
                cfg.vision_layers,
                cfg.text_layers,
                cfg.patch_size,
                image_size,
                cfg.context_length,
            )
        elif cfg.model.endswith(".json"):
            model_cfg, _ = read_config(cfg.model, "[train]")
        else:
            import open_clip

            model_cfg = open_clip.get_model_config(cfg.model)
            if model_cfg is None:
                raise dalle_kit.UserError(
                    f"[train] model '{cfg.model}': not an open_clip architecture nor a .json config; "
                    "see open_clip.list_models(), or leave it empty for the tiny CLIP"
                )
        model_cfg["vision_cfg"]["image_size"] = image_size  # trained at the dataset's own size
        return model_cfg, default_preprocess(image_size)

    def lr_at(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ training
    def setup(self, run, state: dict | None) -> dalle_kit.Training:
        from open_clip import ClipLoss

        cfg = self.config
        data = run.parts.dataset()
        train_set, test_set = data.load("train"), data.load("test")
        model_cfg, preprocess = self.architecture(data.image_size)
        atomic_write_text(
            run.dir / CONFIG_FILE, json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
        )
        device = run.device
        model = instantiate(model_cfg, preprocess).to(device)
        tokenize = tokenizer_for(model_cfg)

        def token_table(captions):  # each distinct caption tokenised once
            distinct = list(dict.fromkeys(captions))
            index = {c: i for i, c in enumerate(distinct)}
            return tokenize(distinct), torch.tensor([index[c] for c in captions])

        train_tokens, train_ids = token_table(train_set.captions)
        n_eval = min(cfg.eval_pairs, len(test_set))
        eval_tokens, eval_ids = token_table(test_set.captions[:n_eval])
        eval_images = preprocess_images(test_set.images[:n_eval], preprocess).to(device)
        eval_tokens = eval_tokens[eval_ids].to(device)

        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        loss_fn = ClipLoss()
        data_rng = run.rng("data")
        model.train()
        train_model = run.parts.parallel(
            model
        )  # several processes: gradients averaged (DDP); the loss is per local batch

        def train_step(done: int) -> dict[str, float]:
            for group in opt.param_groups:
                group["lr"] = self.lr_at(done)
            idx = torch.randint(len(train_set), (cfg.batch_size,), generator=data_rng)
            images = preprocess_images(train_set.images[idx], preprocess).to(device, non_blocking=True)
            tokens = train_tokens[train_ids[idx]].to(device)
            image_features, text_features, logit_scale = train_model(images, tokens)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            return {"loss": loss.item()}

        def log_values(step: int) -> dict[str, float]:
            acc = contrastive_accuracy(model, eval_images, eval_tokens, eval_ids)
            model.train()
            return {"contrastive_acc": acc, "logit_scale": model.logit_scale.exp().item(), "lr": self.lr_at(step - 1)}

        def export(step: int, state: dict) -> None:  # first: a run with a checkpoint always has its weights file
            _save_weights(
                run.dir / WEIGHTS_FILE, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            )

        return dalle_kit.Training(
            modules={"clip": model},
            optimizers={"clip": opt},
            train_step=train_step,
            log_values=log_values,
            before_save=export,
            divergence_fix="lower [train] lr",
        )

    def schedule_depends_on_steps(self) -> bool:
        return True  # warmup then cosine decay to the last step


@torch.no_grad()
def contrastive_accuracy(model, images: torch.Tensor, tokens: torch.Tensor, caption_ids: torch.Tensor) -> float:
    """Image -> text top-1 among the batch's captions; right when the retrieved caption's text is the true one."""
    model.eval()
    similarity = model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).T
    retrieved = similarity.argmax(dim=1).cpu()
    return float((caption_ids[retrieved] == caption_ids).float().mean())


def _save_weights(path, tensors: dict) -> None:
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))


@dalle_kit.hookimpl
def register_pipelines(register):
    register(ClipPretrain)
