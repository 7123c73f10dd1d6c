"""Pulse: streaming analytics for conversational campaigns.

The folder `pulse/` holds the CLI, the supervisor and the leaves every layer may use
(`settings`, `kafka`, `lakefs`); the layers are top-level folders installed beneath it
(`package-dir` in pyproject.toml: folder `rollups/` is `pulse.rollups`).
"""

__version__ = "0.1.0"
