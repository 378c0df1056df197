"""dalle-kit: a small core for text-conditional image generation; every part arrives as a plugin.

Public API for plugin authors::

    import dalle_kit

    @dalle_kit.hookimpl
    def register_generators(register):
        register(MyGenerator)   # a dalle_kit.Generator subclass with `name` and an attrs `Config`
"""

__version__ = "0.1.0"

from .errors import RecipeError, UserError
from .markers import hookimpl, hookspec
from .parts import (
    Dataset,
    Discriminator,
    Generator,
    ImageCaptions,
    Loss,
    Metric,
    NoConfig,
    Part,
    Pipeline,
    TextEncoder,
    prior_sampler,
    to_float_images,
    to_uint8_images,
)
from .registry import HOOK_API_VERSION
from .schema import param

__all__ = [
    "HOOK_API_VERSION", "Dataset", "Discriminator", "Generator", "ImageCaptions", "Loss", "Metric", "NoConfig",
    "Part", "Pipeline", "RecipeError", "TextEncoder", "UserError", "hookimpl", "hookspec", "param", "prior_sampler",
    "to_float_images", "to_uint8_images",
]
