"""DALL-E stage 2: BPE caption tokens, the causal token transformer, sampling after the caption, CLIP re-ranking,
and the `dalle` pipeline on a tiny dvae run (trains, resumes exactly, samples)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_CLIP

import dalle_kit
from dalle_kit import api
from dalle_kit.tools.sample import sample as draw_grid
from dalle_kit.checkpoint import latest_checkpoint, load_state
from dalle_kit.registry import get_registry
from dalle_kit.run import Run
from dalle_kit_plugins.dalle import pipeline as dalle_pipeline
from dalle_kit_plugins.dalle.transformer import CaptionTokens, TokenTransformer

TINY_DVAE = [
    "data.train_size=300",
    "data.test_size=64",
    "codec.width=16",
    "codec.res_blocks=0",
    "codec.codebook_size=32",
    "codec.embed_dim=8",
    "train.steps=10",
    "train.batch_size=16",
    "train.eval_images=16",
    "train.log_every=5",
    "train.checkpoint_every=10",
]


@pytest.mark.unit
def test_caption_tokens_are_bpe_pieces_renumbered():
    vocab = CaptionTokens.fit(["a red circle", "a blue square"])
    assert len(vocab) == 2 + len(vocab.pieces) and len(vocab.pieces) == 5  # a, red, circle, blue, square
    ids = vocab.ids(["a red square", "a green circle"], 6)
    assert ids.shape == (2, 6) and (ids[:, 3:] == 0).all()  # padded
    assert ids[1, 1] == 1  # "green": unknown
    assert vocab.unknown_words(["a green circle"]) == ["green"]
    assert torch.equal(CaptionTokens(vocab.pieces).ids(["a red square"], 6), ids[:1])  # saved pieces: same ids


@pytest.mark.unit
def test_the_transformer_is_causal():
    torch.manual_seed(0)
    model = TokenTransformer(10, 20, text_len=4, image_len=6, width=16, depth=2, heads=2).eval()
    seq = torch.randint(10, (2, 10))
    changed = seq.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 10
    a, b = model(seq), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6) and not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.unit
def test_sampling_follows_the_caption_prefix():
    """Trained on two captions whose images are all token 3 or all token 7, sampling after each caption gives its
    own token: the draw reads the caption it is given."""
    torch.manual_seed(0)
    model = TokenTransformer(4, 10, text_len=2, image_len=5, width=32, depth=2, heads=2)
    text = torch.tensor([[2, 0], [3, 0]])
    image = torch.tensor([[3] * 5, [7] * 5])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    seq = model.sequence(text, image)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(seq[:, :-1]).transpose(1, 2), seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    drawn = model.eval().sample(text.repeat(4, 1), torch.Generator().manual_seed(1), top_k=2)
    assert drawn.shape == (8, 5) and (drawn.min() >= 0) and (drawn.max() < 10)
    assert (drawn[0::2] == 3).all() and (drawn[1::2] == 7).all(), drawn


def test_dalle_trains_resumes_exactly_and_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    api.train("shapes-dvae", TINY_DVAE, runs_dir="runs", quiet=True)
    small = [
        "data.train_size=300",
        "data.test_size=64",
        "train.steps=12",
        "train.batch_size=8",
        "train.width=32",
        "train.depth=1",
        "train.heads=2",
        "train.log_every=4",
        "train.checkpoint_every=6",
        "sample.every=0",
    ]
    full = api.train("shapes-dalle", small, runs_dir="full", quiet=True)
    assert full.recipe.train.codec_run == str((tmp_path / next((tmp_path / "runs").iterdir())).resolve())
    part = api.train("shapes-dalle", small, stop_at=6, runs_dir="part", quiet=True)
    api.train(resume=part.dir, quiet=True)
    a = load_state(latest_checkpoint(full.checkpoints.folder)[1])
    b = load_state(latest_checkpoint(part.checkpoints.folder)[1])
    for key, tensor in a["models"]["transformer"].items():
        assert torch.equal(tensor, b["models"]["transformer"][key]), key
    assert a["extra"]["caption_tokens"] == b["extra"]["caption_tokens"]
    out = draw_grid(full.dir, ["a red circle", "a blue square"], n=2, out=tmp_path / "grid.png")
    assert out.is_file()
    pipeline = full.recipe.pipeline.info.cls(full.recipe.train)
    assert pipeline.sampling() == "top-8, temperature 1"


def test_rerank_keeps_the_image_the_clip_prefers(tmp_path, monkeypatch):
    """rerank = N with a clip_run: of N drawings per prompt, the one the CLIP scores highest is kept. The CLIP is a
    real clip-pretrain run (a few steps), loaded the way a user's is; the test records its scores on each drawing
    and checks the kept image is the best-scored one. The protocol names the re-ranking."""
    real_scores = dalle_pipeline.clip_scores
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(clip, images, prompts):
        value = real_scores(clip, images, prompts)
        drawn.append((images.clone(), value))
        return value

    monkeypatch.setattr(dalle_pipeline, "clip_scores", recording)
    monkeypatch.chdir(tmp_path)
    clip = api.train("shapes-clip-pretrain", TINY_CLIP, runs_dir="clip", quiet=True)
    api.train("shapes-dvae", TINY_DVAE, runs_dir="runs", quiet=True)  # the codec shapes-dalle finds in runs/
    small = ["data.train_size=300", "data.test_size=64", "train.width=16", "train.depth=1", "train.heads=2"]
    run = api.train(
        "shapes-dalle",
        [*small, "train.steps=2", "sample.every=0", "train.rerank=3", f'train.clip_run="{clip.dir}"'],
        runs_dir="dalle",
        quiet=True,
    )
    pipeline = run.recipe.pipeline.info.cls(run.recipe.train)
    assert pipeline.sampling() == f"top-8, temperature 1, best of 3 by CLIP {clip.dir.resolve()}"
    draw = dalle_kit.Trainer.restore(Run.open(run.dir, get_registry(), quiet=True), pipeline).sampler()
    drawn.clear()
    kept = draw(["a red circle", "a blue square"], torch.Generator().manual_seed(0))
    assert len(drawn) == 3
    images = torch.stack([i for i, _ in drawn])
    scores = torch.stack([v for _, v in drawn])
    assert not torch.equal(images[0], images[1]), "three drawings per prompt, not one repeated"
    best = scores.argmax(0)
    assert torch.equal(kept, images[best, torch.arange(2)])
    with pytest.raises(dalle_kit.Invalid, match="needs a CLIP"):
        dalle_pipeline.DALLE.Config(rerank=3)


@pytest.mark.unit
def test_a_missing_codec_run_names_the_command_that_makes_it(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "shapes-dalle")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no finished shapes-dvae run in runs/" in err and "dalle-kit run shapes-dvae`" in err, err
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
