"""pluggy markers for the `dalle_kit` project name."""

import pluggy

PROJECT = "dalle_kit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
