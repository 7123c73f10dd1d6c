"""The published JSON Schema accepts what the worker accepts and rejects what it rejects
(for everything JSON Schema can express)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.schemas.jsonschema import event_json_schema
from tests.schemas.test_decode import NOW_US, with_

VALIDATOR = jsonschema.Draft202012Validator(event_json_schema())


@pytest.mark.parametrize("raw", [
    with_(), with_(event_type="chat_ended", channel="call"), with_(metadata={"a": 1}),
    with_(event_type="usage", customer_id=None, category="minutes", value=3),
    with_(event_type="funnel_step", label="picked_up", value=...),
    with_(occurred_at=1789950000000), with_(campaign_id=None), with_(extra="ignored"),
])
def test_schema_accepts_valid_events(raw: bytes):
    assert isinstance(decode_event(raw, NOW_US), Event)
    VALIDATOR.validate(json.loads(raw))


@pytest.mark.parametrize("raw", [
    with_(id=...), with_(customer_id=None), with_(value=-1), with_(value="1"),
    with_(tenant_id="a b"), with_(event_type="sms"), with_(channel="fax"),
    with_(event_type="usage", customer_id=None, category=None),
    with_(event_type="intent_detected", value=...), with_(metadata=[1]), with_(id=""),
])
def test_schema_rejects_invalid_events(raw: bytes):
    assert not isinstance(decode_event(raw, NOW_US), Event)
    assert not VALIDATOR.is_valid(json.loads(raw))


def test_pulse_schema_prints_it():
    out = subprocess.run([sys.executable, "-m", "pulse.cli", "schema"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == event_json_schema()
