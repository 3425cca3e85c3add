"""What keeps the service answering under hostile clients: connection deadlines and limits, the Host allowlist,
and generic 5xx bodies.

* :class:`GuardedH11Protocol`: uvicorn's HTTP/1.1 protocol with a deadline for a request's headers (counted from
  the connection's start or the end of the previous response) and one for its body, and a cap on the connections
  one client address holds at once. A client sending one header byte every few seconds is cut off at the header
  deadline; a client opening more connections than its share gets a 503 and the connection is closed. When all
  ``max_connections`` slots are taken, a new connection closes the one that has waited longest for its headers
  (an idle or slow one, which has cost no work yet) instead of being refused, so slow connections from many
  addresses cannot lock out a client that sends its request at once.
* :class:`HostAllowlist`: answers 400 to a request whose ``Host`` is not an allowed name, so a web page cannot
  reach a service on loopback by DNS rebinding (the browser sends the attacker's name as ``Host``); and 403 to a
  POST whose ``Origin`` (sent by browsers) is another site, so a page cannot make the operator's browser spend
  the service's work (cross-site request forgery). Clients that send no ``Origin`` (curl, SDKs) are not affected.
* :class:`InternalErrors`: an unexpected exception becomes a 500 whose body names only a reference; the exception,
  with that reference, goes to the server's log.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Iterable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mghft.errors import UsageError

log = logging.getLogger("mghft.serve")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""The Host names allowed by default: the service answers only to clients that name it as loopback."""

OPEN_PATHS = ("/healthz", "/readyz")
"""Paths answered whatever the Host (probes from orchestrators use the pod's address)."""


def raw_response(status: int, reason: str, detail: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with a JSON ``{"detail": ...}`` body."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ConnectionGuard:
    """Shared state of the guarded connections of one server: limits and the live count per client address.

    Args:
        header_timeout: seconds a client has to send a request's headers (from connecting, or from the end of the
            previous response on a kept-alive connection).
        body_timeout: seconds a client has to send a request's body once its headers are in.
        max_per_client: most connections one client address holds at once (0: no limit; behind a reverse proxy
            every client has the proxy's address).
    """

    def __init__(self, header_timeout: float, body_timeout: float, max_per_client: int) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_per_client = max_per_client
        self.per_client: dict[str, int] = {}
        self.waiting: dict[GuardedH11Protocol, float] = {}  # connections waiting for headers -> since when
        self.refused = 0  # connections refused for being over a client's share
        self.timed_out = 0  # connections closed at a deadline
        self.evicted = 0  # connections waiting for headers closed to make room for a new one

    def enter(self, address: str) -> bool:
        """Count a new connection from ``address``; False when it is over the client's share."""
        n = self.per_client.get(address, 0) + 1
        self.per_client[address] = n
        return not self.max_per_client or n <= self.max_per_client

    def leave(self, address: str) -> None:
        n = self.per_client.get(address, 0) - 1
        if n > 0:
            self.per_client[address] = n
        else:
            self.per_client.pop(address, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a per-client connection cap (see the module)."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._address: str | None = None
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of the awaited request's headers have arrived
        self._served = 0  # responses completed on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else "unknown"
        if not self.guard.enter(self._address):
            self.guard.refused += 1
            detail = f"too many connections from your address (at most {self.guard.max_per_client} at once)"
            transport.write(raw_response(503, "Service Unavailable", detail))
            transport.close()
            return
        if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
            self._evict_longest_waiting()
        self._rearm()

    def _waiting_rank(self) -> int:
        """Which waiting connection goes first: 0 sending its headers slowly, 1 new and silent, 2 kept alive idle."""
        return 0 if self._partial else 1 if not self._served else 2

    def _evict_longest_waiting(self) -> None:
        """Close a connection waiting for its request's headers, to make room for this one: a slow sender first,
        then a silent new one, then an idle kept-alive one; the longest waiting of its kind."""
        candidates = [(p._waiting_rank(), since, p) for p, since in self.guard.waiting.items() if p is not self]
        if not candidates:
            return  # every slot is doing work: uvicorn answers 503
        _, _, victim = min(candidates, key=lambda c: c[:2])
        self.guard.evicted += 1
        victim._close_with(503, "Service Unavailable", "the service is at its connection limit; retry")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._address is not None:
            self.guard.leave(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._rearm()
        if self._phase == "headers" and data:
            self._partial = True

    def on_response_complete(self) -> None:
        self._served += 1
        super().on_response_complete()
        self._rearm()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.guard.waiting.pop(self, None)

    def _close_with(self, status: int, reason: str, detail: str) -> None:
        """Close, telling why unless the connection is an idle kept-alive one (its client just reconnects)."""
        self._cancel()
        self._phase = None
        if not self.transport.is_closing():
            if self._waiting_rank() < 2:
                self.transport.write(raw_response(status, reason, detail))
            self.transport.close()

    def _rearm(self) -> None:
        """Start the deadline of the phase the client is in (headers or body); none while the app answers."""
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        self._partial = False
        if phase is not None:
            limit = self.guard.header_timeout if phase == "headers" else self.guard.body_timeout
            self._timer = self.loop.call_later(limit, self._expired, phase, limit)
            if phase == "headers":
                self.guard.waiting[self] = self.loop.time()

    def _expired(self, phase: str, limit: float) -> None:
        self._timer = None
        self.guard.waiting.pop(self, None)
        if self.transport.is_closing():
            return
        self.guard.timed_out += 1
        idle = phase == "headers" and self._waiting_rank() == 2
        if not idle and (phase == "headers" or self.cycle is None or not self.cycle.response_started):
            # a request under way and no response yet: tell the client why before closing
            detail = f"the request's {phase} did not arrive within {limit:g} s"
            self.transport.write(raw_response(408, "Request Timeout", detail))
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> Any:
    """The protocol class uvicorn's ``Config(http=...)`` takes, bound to ``guard``."""

    class Bound(GuardedH11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, guard=guard, **kwargs)

    return Bound


# ----------------------------------------------------------------------------------------------------------------
# ASGI middlewares


def _host_name(value: str) -> str:
    """The name in a Host header without its port, lower case; IPv6 literals without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_host_names(names: Iterable[str], listen_host: str | None = None) -> tuple[str, ...]:
    """The Host names to allow: ``names`` (``*`` allows any), plus the listening address when it is a specific
    one (not a wildcard such as ``0.0.0.0``)."""
    out = [_host_name(n) if n != "*" else "*" for n in names]
    if listen_host:
        host = _host_name(listen_host)
        try:
            wildcard = ipaddress.ip_address(host).is_unspecified
        except ValueError:
            wildcard = host == ""
        if not wildcard and host not in out:
            out.append(host)
    return tuple(dict.fromkeys(out))


class HostAllowlist:
    """ASGI middleware: a request whose ``Host`` is not allowed gets 400 (health probes excepted); a request other
    than GET/HEAD/OPTIONS whose ``Origin`` names another host than its ``Host`` (or ``null``) gets 403."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self.any = "*" in self.allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = _host_name(headers.get(b"host", ""))
        if not self.any and host not in self.allowed:
            await _refuse(send, 400, "this Host name is not served here; the operator allows names with --allowed-host")
            return
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            from urllib.parse import urlsplit

            try:
                origin_host = _host_name(urlsplit(origin).hostname or "") if origin != "null" else ""
            except ValueError:
                origin_host = ""
            same_site = origin_host == host or (not self.any and origin_host in self.allowed)
            if not origin_host or not same_site:
                await _refuse(send, 403, "requests from another site's web page are not accepted")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
"""Added to every response: no content sniffing, no framing by other pages, no referrer leaving the service."""


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every response (where the app did not set them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class InternalErrors:
    """ASGI middleware: an unhandled exception is logged with a reference and answered with a generic 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            ref = secrets.token_hex(4)
            log.error("internal error %s on %s %s", ref, scope.get("method"), scope.get("path"), exc_info=e)
            if started:
                raise
            body = json.dumps({"detail": f"internal error (reference {ref}); the details are in the service's log"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})


# ----------------------------------------------------------------------------------------------------------------
# the listening socket


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), so a taken port is found before the model loads.

    Raises:
        UsageError: the port is taken, the address is not this machine's, or the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(
            f"--host {host}: cannot resolve it ({e.strerror})", hint="give an address of this machine"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is taken by another program",
                hint="stop that program or choose another --port",
            ) from None
        if e.errno == errno.EACCES:
            raise UsageError(
                f"no permission to listen on port {port}", hint="ports below 1024 need privileges; use --port 8000"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}", hint="check --host and --port") from None
    sock.set_inheritable(True)
    return sock
