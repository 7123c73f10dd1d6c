"""/openapi.json documents every parameter of contract section 4, every answer, and the
closed set of error codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.api.errors import ErrorCode
from pulse.settings import Settings

RANGE = {"from", "to"}
FUNNEL = {"order", "window"}
PARAMETERS = {  # contract section 4, and `tenant` for admin keys everywhere
    "/analytics/campaign/{campaign_id}": {"campaign_id", *RANGE, *FUNNEL, "compare"},
    "/analytics/overview": {*RANGE, "campaign", *FUNNEL, "compare"},
    "/analytics/intents": {*RANGE, "campaign", "compare"},
    "/analytics/funnel": {*RANGE, "campaign", *FUNNEL},
    "/analytics/timeseries": {"metric", "interval", *RANGE, "campaign", "tz", *FUNNEL},
    "/analytics/time-to-convert": {*RANGE, "campaign", *FUNNEL},
    "/analytics/funnel/customers": {"step", "outcome", *RANGE, "campaign", "limit", "cursor",
                                    "format", *FUNNEL},
    "/analytics/heatmap": {*RANGE, "campaign", "tz"},
    "/analytics/breakdown": {"by", *RANGE, "campaign", "limit"},
    "/analytics/campaigns": RANGE,
    "/analytics/usage": {*RANGE, "compare"},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = Path(tmp_path_factory.mktemp("lake"))
    return TestClient(create_app(Settings(lake=str(root)), keys={})).get("/openapi.json").json()


@pytest.mark.parametrize("path", sorted(PARAMETERS))
def test_every_parameter_and_answer_of_a_report_is_documented(spec: dict, path: str):
    operation = spec["paths"][path]["get"]
    documented = {p["name"]: p for p in operation["parameters"]}
    assert set(documented) == PARAMETERS[path] | {"tenant"}
    for p in documented.values():
        assert p["description"] and p["schema"], p
    schemas = spec["components"]["schemas"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.rsplit("/", 1)[1] in schemas
    for status in ("400", "401", "403", "429", "503"):
        ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/Error"
    if "format" in documented:
        assert "text/csv" in operation["responses"]["200"]["content"]


def test_answers_that_compare_document_previous(spec: dict):
    schemas = spec["components"]["schemas"]
    for name in ("Overview", "Intents", "Usage"):
        previous = schemas[name]["properties"]["previous"]
        assert "previous" not in schemas[name]["required"]
        period = schemas[previous["$ref"].rsplit("/", 1)[1]]
        assert {"from", "to"} <= set(period["required"])
        numbers = set(schemas[name]["required"]) - {"tenant_id", "from", "to", "campaign_id",
                                                    "source", "as_of"}
        assert numbers <= set(period["required"]), name


def test_error_codes_are_a_closed_set(spec: dict):
    detail = spec["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    code = spec["components"]["schemas"].get(detail.get("$ref", "").rsplit("/", 1)[-1], detail)
    assert set(code["enum"]) == {c.value for c in ErrorCode}


def test_dates_are_documented_as_read_where_they_are(spec: dict):
    """A date is local midnight in `tz` where the endpoint takes `tz`, else midnight UTC."""
    for path, item in spec["paths"].items():
        documented = {p["name"]: p for p in item["get"]["parameters"]}
        for name in {"from", "to"} & set(documented):
            said = documented[name]["schema"]["description"]
            assert ("local midnight in `tz`" in said) == ("tz" in documented), (path, said)
            assert ("midnight UTC" in said) == ("tz" not in documented), (path, said)


@pytest.mark.parametrize("steps", [("picked_up",), ("a", "b", "c", "d", "e")])
def test_step_is_bounded_by_the_configured_funnel(tmp_path: Path, steps: tuple[str, ...]):
    served = TestClient(create_app(Settings(lake=str(tmp_path), funnel_steps=steps),
                                   keys={})).get("/openapi.json").json()
    step = next(p for p in served["paths"]["/analytics/funnel/customers"]["get"]["parameters"]
                if p["name"] == "step")
    assert (step["schema"]["minimum"], step["schema"]["maximum"]) == (1, len(steps))
