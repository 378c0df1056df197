"""dalle-kit's built-in parts. Each module is a plugin, declared as an entry point in pyproject.toml
exactly as a third party's would be, and imports nothing from dalle_kit beyond its public API."""
