"""The one redaction of model-server URLs and error texts: what is logged, stored or returned never holds a secret.

A base URL can carry credentials three ways: a ``user:password@`` part, query parameters (``?token=``,
``?api-key=``, ``?key=``, ``access_token``, signed-URL signatures) and, rarely, a fragment. :func:`redact_url`
replaces each with ``***`` and keeps what helps to find a mistake: the scheme, the host and port, the path, the
names of the query parameters, and the values of a few parameters known to be harmless (``api-version``).
:func:`redact_text` applies it to every URL inside a free text (an upstream error message, an exception) and
removes given secrets (the API key) wherever they appear.

This module imports nothing heavy: the service and the CLI use it without loading the HTTP stack.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"

KEEP_QUERY_VALUES: frozenset[str] = frozenset({"api-version", "api_version", "apiversion", "version"})
"""Query parameters whose values are shown; every other value is replaced by ``***``."""

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*:)?//")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-~%]+)(?::\d*)?(?=$|[/?#])")
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends a userinfo part in ``rest`` (the URL after ``//``), or -1 if there is none.

    Passwords typed into URLs are rarely percent-encoded, so ``@``, ``/``, ``?`` and ``#`` may appear in them. The
    userinfo ends at the last ``@`` that is followed by a host (and port) and then the end, ``/``, ``?`` or ``#``,
    searched first in the authority (up to the first ``/``, ``?`` or ``#``), then up to the first ``?``, then, when
    the authority looks like ``user:password`` rather than ``host:port``, anywhere.
    """
    first_delim = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    first_q = rest.find("?")
    windows = [first_delim, first_q if first_q != -1 else len(rest)]
    head = rest[:first_delim]
    if ":" in head and not re.fullmatch(r"[^:@]*:\d*", head):
        windows.append(len(rest))
    for limit in windows:
        at = rest.rfind("@", 0, limit)
        while at != -1:
            if _HOST_RE.match(rest, at + 1):
                return at
            at = rest.rfind("@", 0, at)
    return -1


def _redact_query(query: str) -> str:
    parts = []
    for item in re.split(r"([&;])", query):
        if item in ("&", ";", ""):
            parts.append(item)
            continue
        name, eq, value = item.partition("=")
        if not eq:  # a bare value may itself be a key
            parts.append(MASK)
            continue
        keep = name.strip().lower().replace("%2d", "-").replace("%5f", "_") in KEEP_QUERY_VALUES
        parts.append(f"{name}={value if keep else MASK}")
    return "".join(parts)


def _pieces(url: str) -> tuple[str, str, str, str | None, str | None]:
    """``(prefix, userinfo, rest, query, fragment)`` of a URL; query and fragment ``None`` when absent."""
    match = _SCHEME_RE.match(url)
    prefix = url[: match.end()] if match else ""
    rest = url[len(prefix) :]
    at = _userinfo_end(rest)
    userinfo = rest[:at] if at != -1 else ""
    rest = rest[at + 1 :] if at != -1 else rest
    rest, hash_mark, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    return prefix, userinfo, rest, (query if q else None), (fragment if hash_mark else None)


def redact_url(url: str | None) -> str:
    """``url`` with its userinfo, query values (except :data:`KEEP_QUERY_VALUES`) and fragment replaced by ``***``.

    ``http://user:p@ss@host/v1?token=abc&api-version=2024-06-01#frag`` becomes
    ``http://***@host/v1?token=***&api-version=2024-06-01#***``; path parameters (``;name=value``) are masked
    too, and a bare query item (no ``=``) becomes ``***``. ``None`` and ``""`` give ``""``; a URL without a scheme
    is treated the same way.
    """
    if not url:
        return ""
    prefix, userinfo, rest, query, fragment = _pieces(url)
    rest = re.sub(r";([^;/=]*)=([^;/]*)", rf";\1={MASK}", rest)  # path parameters (";jsessionid=...")
    out = prefix + (MASK + "@" if userinfo else "") + rest
    if query is not None:
        out += "?" + _redact_query(query)
    if fragment is not None:
        out += "#" + (MASK if fragment else "")
    return out


def url_secrets(url: str | None) -> list[str]:
    """The parts of ``url`` that :func:`redact_url` masks (userinfo, password, query values, fragment).

    An upstream server may echo them without the rest of the URL (``no route /v1/chat?token=...``): pass them to
    :func:`redact_text` as secrets.
    """
    if not url:
        return []
    _, userinfo, rest, query, fragment = _pieces(url)
    found = [userinfo, userinfo.partition(":")[2], fragment or ""]
    found += re.findall(r";[^;/=]*=([^;/]*)", rest)
    for item in re.split(r"[&;]", query or ""):
        name, eq, value = item.partition("=")
        if not eq:
            found.append(name)
        elif name.strip().lower() not in KEEP_QUERY_VALUES:
            found.append(value)
    found += [urllib.parse.unquote(f) for f in found]
    return sorted({f for f in found if len(f) >= 4}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """A logging filter that passes each record's message through :func:`redact_text` (for the ``httpx`` logger,
    which logs every request's full URL at INFO)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` and each secret (4+ characters) masked."""
    text = _URL_IN_TEXT_RE.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text
