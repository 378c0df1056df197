"""The DALL-E family (Ramesh et al. 2021): stage 1, the image tokenizer that turns an image into a grid of tokens
(the kind ``dvae_codec``, its parts ``vq-dvae`` and ``gumbel-dvae``, and the pipeline ``dvae``)."""
