"""The event model: what a message on the input topic must look like.

Depends on nothing else in Pulse. `decode` turns bytes into an `Event` or a
`Rejected` (never raises on bad input); `arrow` and `jsonschema` describe the same
event for the lake and for producers.
"""
