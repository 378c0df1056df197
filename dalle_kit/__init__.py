"""dalle-kit: a small core for text-conditional image generation; every part arrives as a plugin.

Public API for plugin authors::

    import dalle_kit

    @dalle_kit.hookimpl
    def register_text_encoders(register):
        register(MyEncoder)   # a dalle_kit.TextEncoder subclass with `name` and an attrs `Config`
"""

__version__ = "0.1.0"

from .errors import RecipeError, UserError
from .markers import hookimpl, hookspec

#: Names imported on first use (PEP 562): they need torch, and `dalle-kit --help` or `--version` should not.
_LAZY = {
    **{
        name: "parts"
        for name in (
            "Dataset",
            "ImageCaptions",
            "Metric",
            "NoConfig",
            "Part",
            "Pipeline",
            "TextEncoder",
            "TrainConfig",
            "to_float_images",
            "to_uint8_images",
        )
    },
    "HOOK_API_VERSION": "registry",
    "Trainer": "trainer",
    "Training": "trainer",
    "param": "schema",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dalle_kit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "HOOK_API_VERSION",
    "Dataset",
    "ImageCaptions",
    "Metric",
    "NoConfig",
    "Part",
    "Pipeline",
    "RecipeError",
    "TextEncoder",
    "TrainConfig",
    "Trainer",
    "Training",
    "UserError",
    "hookimpl",
    "hookspec",
    "param",
    "to_float_images",
    "to_uint8_images",
]
