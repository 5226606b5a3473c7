"""A person's words for a user agent: "Firefox 132 on Ubuntu", parsed by ua-parser."""
from __future__ import annotations

from functools import lru_cache

from ua_parser import parse


@lru_cache(maxsize=4096)
def describe_device(user_agent: str | None) -> str:
    """Browser and operating system of ``user_agent``; "Unknown device" if it says nothing."""
    result = parse(user_agent) if user_agent else None
    if result is None:
        return "Unknown device"
    browser = _named(result.user_agent)
    system = _named(result.os)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def _named(part) -> str | None:
    if part is None or not part.family or part.family == "Other":
        return None
    return f"{part.family} {part.major}" if part.major else part.family
