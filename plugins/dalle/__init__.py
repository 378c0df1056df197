"""The DALL-E family (Ramesh et al. 2021): stage 1, the discrete VAE that turns an image into a grid of tokens
(the kind ``dvae_codec``, its part ``gumbel-dvae`` and the pipeline ``dvae``)."""
