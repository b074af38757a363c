"""Times and durations as people type them: ``2h``, ``30d``, ``yesterday``, ISO 8601."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone

from ..errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")


def parse_duration_s(text: str) -> int:
    """Seconds in ``N`` followed by ``s``, ``m``, ``h``, ``d`` or ``w`` (``30d``, ``2h``).

    Raises:
        InvalidInput: anything else (ASCII digits only, one unit, more than zero).
    """
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"not a duration: {text!r} (e.g. 90s, 30m, 2h, 30d, 1w)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration ago (``2h``), ``now``, ``today`` or ``yesterday`` (local midnight),
    or an ISO 8601 date or date and time (``2026-12-01``, ``2026-12-01 03:00``,
    ``2026-12-01T03:00:00+00:00``); without a zone it is local time.

    Returns:
        an aware datetime in UTC.
    Raises:
        InvalidInput: not one of these.
    """
    now = now or datetime.now(timezone.utc)
    word = text.strip().lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        midnight = datetime.combine(now.astimezone().date(), time()).astimezone()
        return (midnight - timedelta(days=word == "yesterday")).astimezone(timezone.utc)
    if _DURATION.fullmatch(text):
        return now - timedelta(seconds=parse_duration_s(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"not a time: {text!r} (e.g. 2h, yesterday, 2026-12-01 03:00)") \
            from None
    if moment.tzinfo is None:
        moment = moment.astimezone()         # local time
    return moment.astimezone(timezone.utc)


def parse_size_bytes(text: str) -> int:
    """Bytes in ``N``, ``NK``, ``NM`` or ``NG`` (powers of 1024).

    Raises:
        InvalidInput: anything else.
    """
    match = re.fullmatch(r"([0-9]{1,12})([KMG]?)i?B?", text, re.IGNORECASE)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"not a size: {text!r} (e.g. 500M, 2G)")
    return int(match.group(1)) * 1024 ** " KMG".index(match.group(2).upper() or " ")
