"""What every endpoint needs, built once per app in its lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from pulse.rollups.store import RollupStore
from pulse.settings import Settings

from .auth import Keys
from .cursor import Cursors
from .lag import LagWatch
from .lake import LakeReader
from .metrics import ApiMetrics
from .query import Query
from .replica import JournalReplica


@dataclass
class Context:
    settings: Settings
    keys: Keys
    store: RollupStore
    replica: JournalReplica
    lake: LakeReader
    query: Query
    metrics: ApiMetrics
    lag: LagWatch
    cursors: Cursors


def context(request: Request) -> Context:
    return request.app.state.pulse  # type: ignore[no-any-return]
