"""Faust app, agents, lake sink, broker and actors: everything that moves events."""
