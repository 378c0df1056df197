"""DALL-E 2 (unCLIP): a diffusion prior from CLIP text to CLIP image embeddings and a diffusion decoder."""
