"""The CLIP family: open_clip models, the `clip` text encoder, contrastive pre-training and CLIPScore."""
