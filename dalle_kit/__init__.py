"""dalle-kit: a small core for text-conditional image generation; every part arrives as a plugin.

Public API for plugin authors::

    import dalle_kit

    @dalle_kit.hookimpl
    def register_text_encoders(register):
        register(MyEncoder)   # a dalle_kit.TextEncoder subclass with `name` and an attrs `Config`
"""

__version__ = "0.1.0"

from .errors import RecipeError, UserError, download_reason, one_line
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
    "Training": "parts",
    "Evaluation": "evaluation",
    "MetricResult": "scores",
    "Protocol": "scores",
    "param": "schema",
    "Invalid": "schema",
    "adam_betas": "schema",
    "finite_positive": "schema",
    "finite_nonnegative": "schema",
    "Run": "run",
    "resolve_run_dir": "run",
    "stream_seed": "run",
    "init_from_state": "run",
    "load_modules": "store",
    "usable_cpus": "threads",
}

#: The modules a plugin may import besides the names above (dotted paths below `dalle_kit`): the core's
#: writes that never follow a link, commands printed as they run and progress bars; from the tools above the core,
#: content-addressed caches, reading files without unpickling, evaluating a run, sample grids, a run's HTML page
#: and the conformance kit. Every other module is private (tests/test_public_api.py).
PUBLIC_MODULES = (
    "files",
    "hints",
    "progress",
    "tools.cache",
    "tools.evaluate",
    "tools.report",
    "tools.safe_load",
    "tools.sample",
    "tools.testing",
)


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


#: The public names: the ones imported here and every lazy one.
__all__ = [
    "PUBLIC_MODULES",
    "RecipeError",
    "UserError",
    "download_reason",
    "hookimpl",
    "hookspec",
    "one_line",
    *_LAZY,
]
