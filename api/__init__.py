"""The HTTP API: Starlette app, query layer over rollups and the lake, dashboard.

The folder `api/` installs as the package `pulse.api` (`package-dir` in pyproject.toml).
It imports `pulse.schemas`, `pulse.rollups`, the leaves `pulse.settings`, `pulse.kafka`
and `pulse.lakefs`, `pulse.epoch`, `pulse.checkpoint_store`, and `pulse` itself for its
version, never `pulse.streams`: `pulse api` must not load Faust.
"""
