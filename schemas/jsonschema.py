"""A JSON Schema (2020-12) of the event, for producers; `pulse schema` prints it.

Generated from `WireEvent` and `RULES`, so it cannot drift from what the worker
accepts. Two rules are beyond JSON Schema and are stated in descriptions instead: the
1-hour future limit on `occurred_at` (it depends on the worker's clock) and the 8 KiB
limit on serialized `metadata`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .events import MAX_METADATA_BYTES, RULES, TENANT_ID_PATTERN, WireEvent

_DESCRIPTIONS = {
    "id": "Unique event id; two events with the same tenant_id and id are one event.",
    "tenant_id": "Tenant the event belongs to.",
    "event_type": "What happened.",
    "occurred_at": (
        "Event time: an RFC 3339 string with offset (Z or +hh:mm), or integer epoch "
        "milliseconds. At most 1 hour ahead of the worker's clock."
    ),
    "customer_id": "The customer; required for every type except usage.",
    "campaign_id": "Campaign tag, or null.",
    "channel": "Defaults from the type: call_ended -> call, chat_ended -> chat.",
    "category": "Free grouping; for usage events the metric name, e.g. call_minutes.",
    "label": "Intent label, funnel step or tag.",
    "value": "Duration in seconds (>= 0) for call_ended/chat_ended; amount for usage.",
    "metadata": f"A JSON object, at most {MAX_METADATA_BYTES} bytes serialized.",
    "schema_version": "Defaults to 1.",
}


def event_json_schema() -> dict[str, Any]:
    (base,), components = msgspec.json.schema_components([WireEvent])
    schema = dict(components["WireEvent"])
    properties = schema["properties"]
    properties["occurred_at"] = {
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]
    }
    properties["metadata"] = {"anyOf": [{"type": "object"}, {"type": "null"}]}
    properties["tenant_id"]["pattern"] = f"^{TENANT_ID_PATTERN}$"
    for name, text in _DESCRIPTIONS.items():
        properties[name]["description"] = text
    conditions = []
    for event_type, rule in RULES.items():
        required = [
            name
            for name, needed in (
                ("customer_id", rule.customer),
                ("label", rule.label),
                ("value", rule.value),
                ("category", rule.category),
            )
            if needed
        ]
        then: dict[str, Any] = {
            "required": required,
            "properties": {name: {"not": {"type": "null"}} for name in required},
        }
        if rule.non_negative_value:
            then["properties"]["value"] = {"type": "number", "minimum": 0}
        conditions.append(
            {"if": {"properties": {"event_type": {"const": event_type}}}, "then": then}
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://campaign-pulse.dev/schemas/event.json",
        "title": "Pulse analytics event",
        "description": "One Kafka message value on the Pulse input topic (UTF-8 JSON, "
        "at most 64 KiB). Unknown fields are ignored.",
        **schema,
        "allOf": conditions,
    }
