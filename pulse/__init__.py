"""Pulse: streaming analytics for conversational campaigns.

The folder `pulse/` holds the CLI, the supervisor, the leaves that import nothing of
ours (`settings`, `kafka`, `lakefs`) and what the worker and the API share (`epoch`,
`checkpoint_store`); the layers are top-level folders installed beneath it
(`package-dir` in pyproject.toml: folder `rollups/` is `pulse.rollups`).
"""

__version__ = "0.1.0"
