"""Breakdown group values, their order, top N and other."""

from __future__ import annotations

import json

import pytest

from pulse.rollups import breakdown
from pulse.rollups.breakdown import Tally


@pytest.mark.parametrize(("text", "want"), [
    ('"spring"', "spring"), ('"3"', "3"), ('""', ""), ('"\\u00e9"', "é"),
    ("3", "3"), ("-1", "-1"), ("3.0", "3"), ("30e-1", "3"), ("-0.0", "0"), ("1e2", "100"),
    ("2.5", "2.5"), ("0.1", "0.1"), ("0.000001", "0.000001"), ("1e-7", "1e-7"),
    ("1.5e-7", "1.5e-7"), ("123.456", "123.456"), ("1e21", "1000000000000000000000"),
    ("9007199254740993", "9007199254740992"),  # numbers are doubles
    ("1e400", None), ("true", "true"), ("false", "false"), ("null", None), ("[1]", None),
    ('{"a": 1}', None),
])
def test_the_text_of_a_metadata_value(text, want):
    assert breakdown.value_text(json.loads(text)) == want
    assert breakdown.json_value_text(text) == want
    assert breakdown.json_value_text(None) is None


@pytest.mark.parametrize(("by", "key"), [
    ("channel", None), ("campaign", None), ("metadata.agent", "agent"),
    ("metadata.a.b", "a.b"), ("metadata." + "k" * 128, "k" * 128),
])
def test_what_by_accepts(by, key):
    assert breakdown.metadata_key(by) == key


@pytest.mark.parametrize("by", ["", "metadata.", "metadata." + "k" * 129, "agent", "Channel"])
def test_what_by_refuses(by):
    with pytest.raises(ValueError):
        breakdown.metadata_key(by)


def test_groups_rank_by_conversations_then_value_with_null_last_and_the_rest_summed():
    groups = breakdown.merge([("b", Tally(2, 1, 10.0)), (None, Tally(2, 0, 5.0)),
                              ("a", Tally(2, 2, 1.0)), ("c", Tally(5, 1, 50.0)),
                              ("a", Tally(1, 0, 1.0)), ("empty", Tally(0, 0, 0.0))])
    top, other = breakdown.rank(groups, 2)
    assert top == [("c", Tally(5, 1, 50.0)), ("a", Tally(3, 2, 2.0))]
    assert other == Tally(4, 1, 15.0)
    everything, none_left = breakdown.rank(groups, 4)
    assert [v for v, _ in everything] == ["c", "a", "b", None] and none_left is None


def test_a_json_pointer_escapes_slash_and_tilde():
    assert breakdown.json_pointer("a/b~c") == "/a~1b~0c"
