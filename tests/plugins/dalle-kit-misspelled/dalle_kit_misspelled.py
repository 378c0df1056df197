"""A plugin whose hook name is misspelled."""

import dalle_kit


@dalle_kit.hookimpl
def register_generater(register):
    raise AssertionError("never called")
