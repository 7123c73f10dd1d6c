"""Pulse: streaming analytics for conversational campaigns."""

__version__ = "0.1.0"
