"""dalle-kit's tools: a layer above the core that uses it.

- `report`: a run's self-contained HTML page; `compare`: runs side by side; `pages`: what both pages are made of;
- `bench`: a grid of recipes trained and scored cell by cell;
- `scaffold`: a ready plugin package; `testing`: the conformance kit (`check_part`);
- `commands`: the `dalle-kit` commands that drive them.
"""
