"""A plugin whose hook takes an argument the hook does not provide."""

import dalle_kit


@dalle_kit.hookimpl
def register_losses(register, config):
    raise AssertionError("never called")
