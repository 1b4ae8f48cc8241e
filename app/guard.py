"""The checks in front of every route of the served app (an ASGI layer outside Gradio's own
middleware, :func:`install`):

* **Host:** a request whose ``Host`` header is not localhost, the address the server was
  reached at, the machine's name or one of the ``allowed_hosts`` setting is refused (HTTP
  400): a web page cannot call the app through a DNS name rebound to this machine.
* **Origin:** a request carrying an ``Origin`` other than the page's own (same scheme-less
  host and port as ``Host``) or one of ``allowed_origins`` is refused (HTTP 403) before
  Gradio's CORS layer could answer it: no ``access-control-allow-origin`` for a foreign site,
  and no state change (login, upload, queue) started by one.
* **Logins:** a client address with ``login_max_failures`` failed logins within
  ``login_window_s`` seconds is refused (HTTP 429, ``Retry-After``) until the oldest of them
  is older than the window; each failure and each refusal is one log line with the client
  address (never the password).
* **Framing:** every response carries ``X-Frame-Options: DENY`` and
  ``Content-Security-Policy: frame-ancestors 'none'`` (and ``X-Content-Type-Options:
  nosniff``, ``Referrer-Policy: same-origin``).
* **Answer files:** a file of the answer store (:mod:`app.outputs`) is served only to the
  login that made it (the folder name carries a keyed hash of its login token); another
  login gets 404, as for a missing file.
"""
from __future__ import annotations

import collections
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from app import outputs

log = logging.getLogger("replens.security")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
LOGIN_PATH = re.compile(r"/login/?$")
FILE_PATH = re.compile(r"/file[=/](.+)$")
MAX_CLIENTS = 10000  # client addresses with failures remembered at once


def host_name(netloc: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the lower-case host, without port or final dot."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    if netloc.count(":") == 1:
        netloc = netloc.split(":", 1)[0]
    return netloc.rstrip(".")


def normal_origin(origin: str) -> str:
    """``https://Host:443/`` -> ``https://host:443`` (scheme and netloc, lower case)."""
    parts = urlsplit(origin.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}" if parts.netloc else origin.lower()


def machine_names() -> set[str]:
    """This machine's host name, its fully qualified name and their addresses."""
    names: set[str] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        if not name:
            continue
        names.add(name.lower())
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return names


class LoginThrottle:
    """Failed logins per client address in a sliding window.

    Args:
        max_failures: failures within ``window_s`` after which the client is refused.
        window_s: the window, seconds.
    """

    def __init__(self, max_failures: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        times = self._failures.get(client, collections.deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, self.window_s - (now - times[-self.max_failures]))

    def failed(self, client: str) -> int:
        """Record a failure; returns the failures within the window."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if client not in self._failures:
                if len(self._failures) >= MAX_CLIENTS:  # forget the longest-known client
                    self._failures.pop(next(iter(self._failures)))
                self._failures[client] = times
            times.append(now)
            return len(times)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class Policy:
    """What the guard lets through.

    Args:
        allowed_hosts: extra Host names (``*``: any host).
        allowed_origins: extra origins (``https://host[:port]``) besides the page's own.
        throttle: the login throttle.
        answers_root: the answer store's folder (:func:`app.outputs.default_root`).
        machine: also allow this machine's names (a server listening on every interface).
    """

    def __init__(self, allowed_hosts: Iterable[str], allowed_origins: Iterable[str],
                 throttle: LoginThrottle, answers_root: Path, machine: bool = False) -> None:
        hosts = {host_name(h) for h in allowed_hosts if h.strip()}
        self.any_host = "*" in hosts
        self.hosts = set(LOCAL_NAMES) | hosts | (machine_names() if machine else set())
        self.origins = {normal_origin(o) for o in allowed_origins if o.strip()}
        self.throttle = throttle
        self.answers_root = Path(answers_root).resolve()

    def host_ok(self, host: str | None, server: tuple[str, int] | None) -> bool:
        """The Host header names this server."""
        if host is None:
            return False
        name = host_name(host)
        return self.any_host or name in self.hosts or (server is not None and
                                                       name == host_name(str(server[0])))

    def origin_ok(self, origin: str, host: str) -> bool:
        """``origin`` is the page's own (same host and port as ``Host``) or allowed."""
        norm = normal_origin(origin)
        return urlsplit(norm).netloc == host.strip().lower() or norm in self.origins

    def answer_owner_ok(self, path: str, scope: Scope, cookies: dict[str, str]) -> bool:
        """A file outside the answer store, or one whose answer was made by this login."""
        try:
            target = Path(path).resolve()
            rel = target.relative_to(self.answers_root)
        except (ValueError, OSError):
            return True
        if not rel.parts:
            return True
        app = scope.get("app")
        token = outputs.login_token(cookies, getattr(app, "cookie_id", None))
        return outputs.owner_of(rel.parts[0]) in (outputs.PUBLIC, outputs.owner_tag(token))


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


async def _answer(send: Send, status: int, detail: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON ``{"detail": ...}`` response with the security headers."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())] + SECURITY_HEADERS + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI layer that applies a :class:`Policy` to ``app``."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host, origin = headers.get("host"), headers.get("origin")
        client = (scope.get("client") or ("?", 0))[0]
        refusal = None
        if not self.policy.host_ok(host, scope.get("server")):
            log.warning("request refused: Host %r is not this server (allowed_hosts) from %s",
                        host, client)
            refusal = (400, "Invalid host header: add the name to the allowed_hosts setting "
                            "(REPLENS_ALLOWED_HOSTS) to serve it.")
        elif origin is not None and not self.policy.origin_ok(origin, host or ""):
            log.warning("request refused: Origin %r is not allowed (allowed_origins) from %s",
                        origin, client)
            refusal = (403, "Cross-origin request refused: add the origin to the "
                            "allowed_origins setting (REPLENS_ALLOWED_ORIGINS) to allow it.")
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _answer(send, *refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        match = FILE_PATH.search(path)
        if match and not self.policy.answer_owner_ok(match.group(1), scope,
                                                      _cookies(headers.get("cookie", ""))):
            log.warning("answer file refused: %s was made by another login (from %s)", path,
                        client)
            await _answer(send, 404, "File not found.")
            return
        if scope["method"] == "POST" and LOGIN_PATH.search(path):
            await self._login(scope, receive, send, client)
            return
        await self.app(scope, receive, _with_headers(send))

    async def _login(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        """A login attempt: refused while the client is throttled, else counted."""
        throttle = self.policy.throttle
        wait = throttle.retry_after(client)
        if wait > 0:
            log.warning("login refused from %s: %d failed logins within %.0f s "
                        "(login_max_failures); retry in %.0f s", client,
                        throttle.max_failures, throttle.window_s, wait)
            await _answer(send, 429, f"Too many failed logins; try again in {wait:.0f} s.",
                          [(b"retry-after", str(int(wait) + 1).encode())])
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, _with_headers(watch))
        if status and status[0] in (400, 401, 403):
            n = throttle.failed(client)
            log.warning("failed login from %s (%d of %d allowed within %.0f s)", client, n,
                        throttle.max_failures, throttle.window_s)
        elif status and status[0] < 400:
            throttle.succeeded(client)


def _with_headers(send: Send) -> Send:
    """``send`` that adds the security headers to the response's start."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS
                     if k not in have or k == b"content-security-policy"]
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        await send(message)

    return wrapped


def install(app: Any, policy: Policy) -> None:
    """Put a :class:`Guard` outside every middleware of the Starlette ``app`` (Gradio's CORS
    layer included). Call it from the app's lifespan start, which runs before the server
    accepts connections."""
    stack = app.middleware_stack or app.build_middleware_stack()
    if not isinstance(stack, Guard):
        app.middleware_stack = Guard(stack, policy)
