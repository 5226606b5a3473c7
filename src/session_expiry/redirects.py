"""Safe return URLs: only a path on this site, never an open redirect."""
from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

MAX_LENGTH = 2048


def safe_path(candidate: str | None, fallback: str = "/") -> str:
    """``candidate`` if it is a local absolute path, else ``fallback``.

    Rejects schemes (``javascript:``, ``https:``), network paths (``//host``),
    backslash forms (``/\\host``, which browsers read as ``//host``), paths that
    become a network path once their dot segments are resolved (``/.//host``),
    control characters, and any of these hidden behind percent-encoding. Characters
    outside ASCII come back percent-encoded, fit for a ``Location`` header.
    """
    if not candidate or len(candidate) > MAX_LENGTH:
        return fallback
    decoded = candidate
    for _ in range(3):  # look through double and triple encoding
        if not _looks_local(decoded):
            return fallback
        once_more = unquote(decoded)
        if once_more == decoded:
            break
        decoded = once_more
    else:
        return fallback
    return quote(candidate, safe=_URL_SAFE)


#: Everything a URL path and query may hold as it is; the rest is percent-encoded.
_URL_SAFE = "/?&=%#;:@!$'()*+,~-._[]"


def _looks_local(path: str) -> bool:
    if not path.startswith("/") or path.startswith(("//", "/\\")):
        return False
    if "\\" in path or any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        return False
    parts = urlsplit(path)
    return not parts.scheme and not parts.netloc and not _resolved(parts.path).startswith("//")


def _resolved(path: str) -> str:
    """``path`` with its ``.`` and ``..`` segments resolved, as browsers and
    ``urljoin`` resolve them (RFC 3986, 5.2.4): ``/a/..//b`` is ``//b``."""
    kept: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments and segments[-1] in (".", ".."):
        kept.append("")  # "/a/." is "/a/"
    return "/" + "/".join(kept)


def same_site_path(url: str | None, host_url: str) -> str | None:
    """The local path of ``url`` if it points at this site (e.g. a Referer), else None."""
    if not url:
        return None
    if url.startswith(host_url + "/"):
        url = url[len(host_url):]
    path = safe_path(url, fallback="")
    return path or None
