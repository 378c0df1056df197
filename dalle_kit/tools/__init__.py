"""dalle-kit's tools: a layer above the core that uses it and that it does not know.

- `report`: a run's self-contained HTML page; `compare`: runs side by side; `pages`: what both pages are made of;
- `bench`: a grid of recipes trained and scored cell by cell;
- `scaffold`: a ready plugin package; `testing`: the conformance kit (`check_part`);
- `contracts`: the plugin reference rendered from the code (docs/contracts.md, `plugins show KIND`);
- `registry_index`: what the listing commands (`plugins list`, `plugins show`, `recipe list`) print, cached so that
  they answer without importing torch;
- `commands`: the `dalle-kit` commands that drive them, declared as entry points of the ``dalle_kit.commands`` group
  (pyproject.toml), which the CLI loads when a command needs them.

No module of the core (the rest of `dalle_kit`) imports from here (tests/test_layers.py).
"""
