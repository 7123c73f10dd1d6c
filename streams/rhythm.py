"""When people answer: the daily and weekly rhythm of calls and chats, in local time.

Outbound calls are answered in working hours (a dip at lunch, a second peak after
work), much less on Saturdays and hardly on Sundays; chats run later into the evening
and hold up at weekends. A `Calendar` puts that rhythm in a tenant's time zone, so the
simulated history clusters where a weekday x hour heatmap expects it, and follow-up
calls land at times people pick up. Pure, like `streams.actors`: time is handed in.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SECOND = 1_000_000
"""Simulated time is in microseconds."""
HOUR = 3600 * SECOND
DAY = 24 * HOUR

CALL_WEEKDAY = (1, 1, 1, 1, 1, 2, 4, 12, 35, 70, 90, 95,
                70, 60, 85, 95, 90, 75, 60, 50, 35, 16, 6, 2)
"""Relative call volume per local hour, Monday to Friday."""
CALL_SATURDAY = (1, 1, 1, 1, 1, 1, 2, 4, 10, 22, 34, 38,
                 34, 30, 28, 24, 20, 16, 12, 10, 7, 4, 2, 1)
CALL_SUNDAY_SHARE = 0.35
"""Sunday's calls, as a share of Saturday's at the same hour."""
CHAT_WEEKDAY = (8, 5, 3, 2, 2, 3, 6, 12, 22, 30, 34, 36,
                40, 36, 34, 34, 36, 42, 50, 58, 62, 56, 38, 18)
CHAT_WEEKEND = (12, 8, 5, 3, 2, 2, 4, 8, 16, 28, 40, 46,
                50, 50, 46, 44, 44, 46, 50, 54, 56, 50, 36, 20)
PEAK = 95.0
"""The highest weight of any table: weights divided by it are 0..1."""


def local_weights(weekday: int, hour: int) -> tuple[float, float]:
    """(call, chat) weight, 0..1, of a local weekday (0 = Monday) and hour."""
    if weekday < 5:
        call, chat = CALL_WEEKDAY[hour], CHAT_WEEKDAY[hour]
    else:
        call = CALL_SATURDAY[hour] * (1.0 if weekday == 5 else CALL_SUNDAY_SHARE)
        chat = CHAT_WEEKEND[hour]
    return call / PEAK, chat / PEAK


class Calendar:
    """The rhythm in one time zone, per UTC hour of simulated time (cached)."""

    __slots__ = ("zone", "_hours")

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self._hours: dict[int, tuple[float, float]] = {}

    def weights(self, at_us: int) -> tuple[float, float]:
        """(call, chat) weight, 0..1, of the local hour holding `at_us`."""
        hour = at_us // HOUR
        found = self._hours.get(hour)
        if found is None:
            # The middle of the UTC hour: its local hour, also in half-hour zones.
            local = datetime.fromtimestamp(hour * 3600 + 1800, UTC).astimezone(self.zone)
            found = self._hours[hour] = local_weights(local.weekday(), local.hour)
        return found

    def answering_time(self, after_us: int, channel: str, rnd: random.Random) -> int:
        """The first moment from `after_us` on when the customer picks up.

        Walks forward in steps of a quarter to one and a half hours, answering with
        the hour's weight, so a callback asked for at night happens the next morning.
        """
        at = after_us
        index = 0 if channel == "call" else 1
        for _ in range(200):
            if rnd.random() < self.weights(at)[index]:
                return at
            at += seconds_us(15 * 60, 90 * 60, rnd)
        return at


def seconds_us(low: int, high: int, rnd: random.Random) -> int:
    """A whole number of seconds in low..high, in microseconds (several times cheaper
    than `randint`, which the hot path would otherwise call a few times per event)."""
    return (low + int(rnd.random() * (high - low + 1))) * SECOND


def log_uniform_us(low_us: int, high_us: int, rnd: random.Random) -> int:
    """A delay between `low_us` and `high_us`, as often minutes as hours as days."""
    return int(low_us * (high_us / low_us) ** rnd.random())
