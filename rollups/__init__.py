"""Pure rollup logic: buckets, measures, dedup, journeys and the rollup journal.

The folder `rollups/` installs as the package `pulse.rollups` (`package-dir` in
pyproject.toml). No I/O, no clock, no Kafka, no Faust: time is passed in, state is
folded from records. Imports only `pulse.schemas`. Both the worker (`pulse.streams`)
and the API (`pulse.api`) build on it, which is what keeps the two paths to every
number equal.
"""
