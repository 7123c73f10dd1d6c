"""Faust app, agents, lake sink, broker and actors: everything that moves events.

The folder `streams/` installs as the package `pulse.streams` (`package-dir` in
pyproject.toml). It imports `pulse.schemas`, `pulse.rollups`, the leaves
`pulse.settings`, `pulse.kafka` and `pulse.lakefs`, and `pulse.epoch` and
`pulse.checkpoint_store`, never `pulse.api`.
"""
