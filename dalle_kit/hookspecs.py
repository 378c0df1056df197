"""The hooks a plugin may implement: one ``register_*`` hook per kind of part.

Each receives ``register``, a function to call once per part class::

    @dalle_kit.hookimpl
    def register_generators(register):
        register(MyGenerator)

The class must subclass the kind's base in `dalle_kit.parts` and carry ``name`` and ``Config``.
"""

from .markers import hookspec


@hookspec
def register_text_encoders(register):
    """Register `dalle_kit.TextEncoder` subclasses: captions -> vectors."""


@hookspec
def register_generators(register):
    """Register `dalle_kit.Generator` subclasses: (noise, text vector) -> images in [-1, 1]."""


@hookspec
def register_discriminators(register):
    """Register `dalle_kit.Discriminator` subclasses: (images, text vector) -> logits."""


@hookspec
def register_losses(register):
    """Register `dalle_kit.Loss` subclasses: adversarial objectives and their regularisers."""


@hookspec
def register_metrics(register):
    """Register `dalle_kit.Metric` subclasses: scores of generated images."""


@hookspec
def register_datasets(register):
    """Register `dalle_kit.Dataset` subclasses: captioned images with fixed splits."""


@hookspec
def register_pipelines(register):
    """Register `dalle_kit.Pipeline` subclasses: training procedures that wire parts."""


@hookspec
def register_recipes(register):
    """Register recipes shipped with a plugin: ``register(name, path_to_toml)``."""
