"""The kind ``dvae_codec``: an image tokenizer, the first stage of DALL-E (Ramesh et al. 2021).

A codec turns an image into a grid of integer tokens and back. The transformer stage models those tokens; the
`dvae` pipeline trains the codec itself. This module holds the kind's base class (its docstring is the
contract), the kind's own conformance check and the registration of both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import dalle_kit
from dalle_kit.tools.testing import fail


class DVAECodec(nn.Module, dalle_kit.Part):
    """An image tokenizer. Built as ``cls(config, image_size=, channels=)``; a size it cannot take is a
    `dalle_kit.UserError` naming the ``[codec]`` key and the fix. It provides

    - ``vocab_size: int`` (K, the number of distinct tokens) and ``grid: tuple[int, int]`` (h, w tokens per image);
    - ``encode(images[B, C, S, S] in [-1, 1]) -> ids[B, h, w]`` (int64 in [0, K)), deterministic;
    - ``decode(ids[B, h, w]) -> images[B, C, S, S]`` in [-1, 1];
    - ``forward(images) -> decode(encode(images))``: the reconstruction through the tokens (what the held-out error
      measures and what a user sees);
    - ``relaxed(images, *, temperature, generator) -> (reconstruction, terms)``: the differentiable training pass.
      ``reconstruction`` is [B, C, S, S] in [-1, 1] and reaches every parameter's gradient; ``terms`` maps names to
      scalar tensors the pipeline adds to its reconstruction loss: ``kl`` (the code posterior's KL to the uniform
      prior, nats per token) is weighted by the pipeline's schedule, any other term is added as it is. Its
      randomness comes from ``generator`` (a CPU `torch.Generator`, the run's named stream), never from the global
      RNG, so a resumed run draws what an uninterrupted one would;
    - ``maintain(images, *, generator)``: called by the pipeline under ``torch.no_grad`` before every training pass
      with that pass's batch; a codec may re-seed codebook entries there (its randomness from ``generator``, its
      state in buffers or parameters, so that it is saved and restored); in several processes the pipeline then
      gives every rank rank 0's parameters and buffers. The base class does nothing.
    """

    kind = "dvae_codec"
    build_context = ("image_size", "channels")
    output_range = (-1.0, 1.0)
    conditioned = False  # reads no text

    vocab_size: int
    grid: tuple[int, int]

    def __init__(self, config: Any, *, image_size: int, channels: int):
        super().__init__()
        self.config, self.image_size, self.channels = config, image_size, channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def relaxed(
        self, images: torch.Tensor, *, temperature: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def maintain(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    @classmethod
    def example_inputs(cls, part, *, n, context, rng, text_shift=False):
        return (
            torch.rand(n, context["channels"], context["image_size"], context["image_size"], generator=rng) * 2 - 1,
        )

    @classmethod
    def expected_shape(cls, part, *, n, context):
        return (n, context["channels"], context["image_size"], context["image_size"])


def check_codec_contract(cls, config=None, image_size: int = 32, channels: int = 3, **_):
    """encode gives [B, h, w] int64 ids in [0, vocab_size); decode gives float images in [-1, 1] of the input's shape
    (and forward is their composition); relaxed gives a finite reconstruction of that shape and finite scalar terms,
    its gradient reaches every parameter, and it draws its randomness from the generator it is given alone."""
    torch.manual_seed(0)
    codec = cls(config if config is not None else cls.Config(), image_size=image_size, channels=channels)
    images = torch.rand(4, channels, image_size, image_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    h, w = codec.grid
    k = codec.vocab_size
    codec.eval()
    with torch.no_grad():
        ids = codec.encode(images)
        if ids.dtype != torch.int64 or tuple(ids.shape) != (4, h, w):
            fail(cls, "encode", f"ids are {ids.dtype} {tuple(ids.shape)}, expected int64 (4, {h}, {w})")
        if ids.min() < 0 or ids.max() >= k:
            fail(cls, "encode", f"ids lie in [{ids.min()}, {ids.max()}], outside [0, vocab_size = {k})")
        if not torch.equal(ids, codec.encode(images)):
            fail(cls, "encode", "two encodings of the same images differ")
        any_ids = torch.randint(k, (4, h, w), generator=torch.Generator().manual_seed(2))
        out = codec.decode(any_ids)
        if out.dtype != torch.float32 or tuple(out.shape) != tuple(images.shape):
            fail(cls, "decode", f"decode gives {out.dtype} {tuple(out.shape)}, expected float32 {tuple(images.shape)}")
        if not torch.isfinite(out).all() or out.min() < -1 - 1e-5 or out.max() > 1 + 1e-5:
            fail(cls, "decode", "decoded images must be finite and lie in [-1, 1]")
        if not torch.equal(codec(images), codec.decode(ids)):
            fail(cls, "forward", "forward(images) is not decode(encode(images))")
    codec.train()
    runs = []
    for global_seed in (3, 4):  # another global RNG state, the same generator: the same pass
        torch.manual_seed(global_seed)
        runs.append(codec.relaxed(images, temperature=0.5, generator=torch.Generator().manual_seed(5)))
    (recon, terms), (again, _) = runs
    if tuple(recon.shape) != tuple(images.shape) or not torch.isfinite(recon).all():
        fail(
            cls, "relaxed", f"the reconstruction is {tuple(recon.shape)} or not finite, expected {tuple(images.shape)}"
        )
    if not torch.equal(recon, again):
        fail(cls, "relaxed", "the pass depends on the global RNG, not only on its generator")
    bad = [name for name, t in terms.items() if t.ndim != 0 or not torch.isfinite(t)]
    if bad:
        fail(cls, "relaxed", f"terms {bad} are not finite scalars")
    codec.zero_grad()
    (recon.square().mean() + sum(terms.values(), torch.zeros(()))).backward()
    untrained = [n for n, p in codec.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if untrained:
        fail(cls, "relaxed", f"no gradient reaches {untrained[:3]}: training would leave them as built")


@dalle_kit.hookimpl
def register_kinds(register):
    register(DVAECodec, checks=[check_codec_contract])
