"""The access log's writer: every line once, in order, a chunk per turn of the loop."""

from __future__ import annotations

import asyncio
import logging

from pulse.api.app import AccessLog


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage().split("\n  ")[1:])


def _logger() -> tuple[logging.Logger, Lines]:
    logger = logging.getLogger("test.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Lines()
    logger.handlers = [handler]
    return logger, handler


def _request(i: int) -> dict[str, object]:
    return {"client": ("127.0.0.1", 1), "method": "GET", "path": f"/r{i}",
            "query_string": b""}


def test_a_long_backlog_is_written_in_chunks_that_let_requests_in_between():
    logger, handler = _logger()
    log = AccessLog(logger)
    n = 3 * AccessLog.CHUNK + 10
    turns_between: list[int] = []

    async def scenario() -> None:
        writer = asyncio.create_task(log.run())
        for i in range(n):
            log.add(_request(i), 200, 0.001)
        while sum(map(len, handler.records)) < n:
            before = len(handler.records)
            await asyncio.sleep(0)
            turns_between.append(len(handler.records) - before)
        writer.cancel()

    asyncio.run(scenario())
    written = [line for chunk in handler.records for line in chunk]
    assert [line.split('"GET ')[1].split('"')[0] for line in written] == [
        f"/r{i}" for i in range(n)]
    assert max(map(len, handler.records)) == AccessLog.CHUNK
    assert max(turns_between) == 1  # one chunk per turn, never the whole backlog


def test_lines_pending_when_the_writer_stops_are_written():
    logger, handler = _logger()
    log = AccessLog(logger)
    n = 2 * AccessLog.CHUNK

    async def scenario() -> None:
        writer = asyncio.create_task(log.run())
        for i in range(n):
            log.add(_request(i), 200, 0.001)
        while not handler.records:
            await asyncio.sleep(0.01)
        log.add(_request(n), 200, 0.001)  # arrives while the backlog is being written
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    asyncio.run(scenario())
    written = [line.split('"GET ')[1].split('"')[0] for chunk in handler.records
               for line in chunk]
    assert written == [f"/r{i}" for i in range(n + 1)]
