"""pluggy markers for the `dalle_kit` project name."""

import pluggy

PROJECT = "dalle_kit"
#: The entry-point group every plugin, built-in or not, is declared in.
ENTRY_POINT_GROUP = "dalle_kit"
#: The distribution that ships the built-in plugins.
BUILTIN_DISTRIBUTION = "dalle-kit"
#: Comma-separated plugin (entry point or distribution) names to load besides the built-ins; empty: built-ins only.
SELECT_ENV = "DALLE_KIT_PLUGINS"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
