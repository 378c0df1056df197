"""The DALL-E family (Ramesh et al. 2021): stage 1, the image tokenizer that turns an image into a grid of tokens
(the kind ``dvae_codec``, its parts ``vq-dvae`` and ``gumbel-dvae``, and the pipeline ``dvae``); stage 2, the
pipeline ``dalle``: a transformer over BPE caption tokens then image tokens, sampled token by token, re-ranked by
the toolkit's own CLIP."""
