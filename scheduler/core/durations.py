"""Human durations ('15m', '30d', '1h30m') as used in GPUTeam specs and the policy file."""

from __future__ import annotations

import math
import re

from scheduler.core.errors import InvalidInput

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object, obj: str, field: str) -> float:
    """Seconds in `value`; a bare number is seconds. Refuses negatives and junk."""
    if isinstance(value, bool):
        raise InvalidInput(obj, field, f"{value!r} is not a duration", _HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidInput(obj, field, "empty duration", _HINT)
        try:
            return parse_duration(float(text), obj, field)  # a bare number is seconds
        except ValueError:
            pass
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise InvalidInput(obj, field, f"{value!r} is not a duration", _HINT)
    else:
        raise InvalidInput(obj, field, f"{value!r} is not a duration", _HINT)
    if not math.isfinite(seconds):
        raise InvalidInput(obj, field, f"{value!r} is not a finite duration", _HINT)
    if seconds < 0:
        raise InvalidInput(obj, field, f"{value!r} is negative", _HINT)
    return seconds


def format_duration(seconds: float) -> str:
    """Short form for messages: '3d4h', '15m', '42s'."""
    seconds = round(seconds)
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(out) == 2:
            break
    return "".join(out)


_HINT = "write a number of seconds or a duration such as '90s', '15m', '12h', '30d' or '2w'"
