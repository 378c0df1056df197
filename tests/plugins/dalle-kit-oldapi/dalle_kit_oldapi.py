"""A plugin built for a hook API this dalle-kit does not provide."""

import dalle_kit

DALLE_KIT_API = 0


@dalle_kit.hookimpl
def register_generators(register):
    raise AssertionError("never called")
