"""The baseline of `pulse bench api`: one Starlette route returning `{"hello": "world"}`.

Served exactly as `pulse api` serves its app (`api.server.run_api`): one uvicorn
process, uvloop, httptools, no access log. Run as `python -m pulse.benchmarks.hello PORT`.
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/hello", hello)])


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    print(f"hello: listening on http://127.0.0.1:{port}/hello", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", timeout_graceful_shutdown=5,
                h11_max_incomplete_event_size=16 * 1024)


if __name__ == "__main__":
    main()
