"""A plugin that registers a class that is not a gan.Generator."""

from torch import nn

import dalle_kit


class NotAGenerator(nn.Module):
    name = "not-a-generator"


@dalle_kit.hookimpl
def register_generators(register):
    register(NotAGenerator)
