"""At most a few lake queries per tenant at once, so that no tenant starves the others."""

from __future__ import annotations

import asyncio

from .errors import LakeBusy


class TenantSlots:
    """At most `per_tenant` lake queries per tenant at once, so none can starve others.

    The thread pool bounds the total; this bounds each tenant's part of it. A short
    queue behind the running queries absorbs one dashboard's burst (a page load asks
    for several parts at once); past it the API says no at once (429) rather than
    queueing behind a flood.
    """

    def __init__(self, per_tenant: int, queue: int = 16) -> None:
        self.per_tenant = per_tenant
        self.queue = queue
        self._waiting: dict[str, int] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}

    def __call__(self, tenant_id: str) -> _Slot:
        return _Slot(self, tenant_id)

    def _gate(self, tenant_id: str) -> asyncio.Semaphore:
        gate = self._gates.get(tenant_id)
        if gate is None:
            gate = self._gates[tenant_id] = asyncio.Semaphore(self.per_tenant)
        return gate


class _Slot:
    def __init__(self, slots: TenantSlots, tenant_id: str) -> None:
        self.slots, self.tenant_id = slots, tenant_id

    async def __aenter__(self) -> None:
        slots, tenant = self.slots, self.tenant_id
        gate = slots._gate(tenant)
        if not gate.locked():
            await gate.acquire()
            return
        waiting = slots._waiting.get(tenant, 0)
        if slots.per_tenant <= 0 or waiting >= slots.queue:
            raise LakeBusy(tenant)
        slots._waiting[tenant] = waiting + 1
        try:
            await gate.acquire()
        finally:
            slots._waiting[tenant] -= 1
            if not slots._waiting[tenant]:
                del slots._waiting[tenant]

    async def __aexit__(self, *exc: object) -> None:
        self.slots._gate(self.tenant_id).release()
