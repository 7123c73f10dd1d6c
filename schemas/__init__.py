"""The event model: what a message on the input topic must look like.

The folder `schemas/` installs as the package `pulse.schemas` (`package-dir` in
pyproject.toml): import it as `pulse.schemas.events`, never `schemas.events`. It depends
on nothing else in Pulse. `decode` turns bytes into an `Event` or a `Rejected` (never
raises on bad input); `arrow` and `jsonschema` describe the same event for the lake and
for producers.
"""
