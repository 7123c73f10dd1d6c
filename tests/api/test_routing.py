"""DirectRouter chooses the route Starlette's own scan would, only faster."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router
from starlette.testclient import TestClient

from pulse.api.routing import DirectRouter


def _says(text: str):
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{text} {request.path_params}")
    return endpoint


ROUTES = [
    Route("/items/{name}", _says("pattern")),
    Route("/items/special", _says("shadowed")),  # Starlette's scan never reaches it
    Route("/other", _says("other")),
    Route("/post-only", _says("posted"), methods=["POST"]),
]


def _client(router_class: type) -> TestClient:
    app = Starlette()
    app.router = router_class(ROUTES)
    return TestClient(app)


def test_every_request_gets_what_starlettes_own_router_gives():
    direct, plain = _client(DirectRouter), _client(Router)
    for method, path in [("GET", "/other"), ("GET", "/items/special"), ("GET", "/items/x"),
                         ("POST", "/other"), ("GET", "/post-only"), ("POST", "/post-only"),
                         ("GET", "/other/"), ("GET", "/missing")]:
        ours = direct.request(method, path, follow_redirects=False)
        theirs = plain.request(method, path, follow_redirects=False)
        assert (ours.status_code, ours.text, ours.headers.get("location")) == (
            theirs.status_code, theirs.text, theirs.headers.get("location")), (method, path)


def test_only_unshadowed_routes_without_parameters_are_looked_up():
    assert sorted(DirectRouter(ROUTES)._direct) == ["/other", "/post-only"]
