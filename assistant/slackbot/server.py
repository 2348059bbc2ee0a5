"""The bot's HTTP endpoint (Events API, slash commands, interactivity on one URL) behind uvicorn, with limits.

``BotHTTPServer`` serves a small ASGI app with uvicorn (h11) on its own thread and event loop:

- **body size**: a ``Content-Length`` over ``max_body_bytes`` → 413 before a byte of the body is read;
  a chunked body is counted as it arrives. A ``Content-Length`` that is not a number → h11's 400.
- **header timeout**: a connection that has not sent a complete request head within
  ``header_timeout_s`` (from connect, or from the end of its previous response) is closed with 408.
  uvicorn has no such timeout of its own, so ``_LimitedH11`` adds one (``Config(http=<class>)`` is
  uvicorn's documented way to choose the protocol class).
- **body timeout**: the whole body must arrive within ``body_timeout_s`` of the head → 408.
- **connections**: uvicorn's ``limit_concurrency`` answers 503 once ``max_connections`` are open;
  slow connections are cheap (an idle socket on the event loop, no thread each) and the timeouts
  above close them, so a few hundred slow clients do not keep a signed request from being answered.
- **signature first**: ``dispatch`` checks Slack's signature on the raw body before anything parses
  it, so an unsigned or forged request gets 401 whatever it contains (not 400 for bad JSON) and
  nothing of it is logged but its size and the verdict. bolt checks the signature again.
- **logs**: every log line taken from a request is one line (newlines escaped, length capped);
  ``OneLineLogs`` does that for bolt's own logger too.

Requests are handed to bolt on a small thread pool (bolt is synchronous; its listeners only enqueue).
Not here: the bolt app and its listeners (``app``), the work behind them (``handlers``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import uvicorn
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
_TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


@dataclass(frozen=True)
class HTTPLimits:
    """What one client may cost the endpoint (``settings.slack.http_*``)."""

    max_body_bytes: int = 1_000_000  # Slack's largest payloads (a big modal's view state) stay well below
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1000
    max_header_bytes: int = 16_384


def one_line(value: object, *, limit: int = 300) -> str:
    """Text taken from a request, made safe for one log line: newlines escaped, length capped."""
    text = str(value).replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}…(+{len(text) - limit} chars)"


class OneLineLogs(logging.Filter):
    """A logging filter: the formatted message becomes one escaped, capped line (bolt logs request bodies)."""

    def __init__(self, *, limit: int = 2000) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = one_line(record.getMessage(), limit=self.limit), None
        return True


def dispatch(app: App, body: str, *, query: str = "", headers: dict[str, list[str]]) -> tuple[int, dict, str]:
    """One raw HTTP request through bolt → (status, headers, body).

    The signature is checked on the raw body first: unsigned, forged or stale → 401, and only the size
    and the verdict are logged. A signed body that is not even JSON/form → 400."""
    verifier = SignatureVerifier(getattr(app, "_signing_secret", "") or "")
    first = {k.lower(): (v[0] if isinstance(v, list) and v else v) for k, v in headers.items()}
    if not verifier.is_valid(
        body, first.get("x-slack-request-timestamp") or "", first.get("x-slack-signature") or ""
    ):
        log.info(
            "slackbot: rejected a request with a missing, wrong or stale signature (%d bytes)", len(body)
        )
        return 401, {"content-type": ["text/plain"]}, "invalid request"
    try:
        request = BoltRequest(body=body, query=query, headers=headers)
    except (ValueError, TypeError, AttributeError):  # signed but unreadable: nothing ran yet
        log.warning(
            "slackbot: a signed request had a body that is neither JSON nor a form (%d bytes)", len(body)
        )
        return 400, {"content-type": ["text/plain"]}, "bad request"
    resp = app.dispatch(request)
    return resp.status, resp.headers, resp.body


class _LimitedH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for the request head (slowloris)."""

    header_timeout_s = 10.0  # set per server by a subclass made in BotHTTPServer

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_gen = 0
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._head_gen += 1
        self.loop.call_later(self.header_timeout_s, self._head_due, self._head_gen)

    def _head_due(self, gen: int) -> None:
        if gen != self._head_gen or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request head arrived in time (pipelined ones too); the body deadline is the app's
        log.info(
            "slackbot: closed a connection that sent no complete request head in %.0f s",
            self.header_timeout_s,
        )
        self.transport.write(_TIMEOUT_REPLY)
        self.transport.close()


class _SlackASGI:
    """POST ``events_path`` → bolt (limits enforced); GET ``/healthz`` → ok; anything else → 404."""

    def __init__(self, app: App, *, events_path: str, limits: HTTPLimits, pool: ThreadPoolExecutor) -> None:
        self.app, self.events_path, self.limits, self.pool = app, events_path, limits, pool

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/healthz":
            return await _reply(send, 200, "ok")
        if method != "POST" or path != self.events_path:
            return await _reply(send, 404, "")
        headers: dict[str, list[str]] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
        declared = int((headers.get("content-length") or ["0"])[0])  # h11 has already refused a non-number
        if declared > self.limits.max_body_bytes:
            log.info(
                "slackbot: refused a %d-byte request body (limit %d)", declared, self.limits.max_body_bytes
            )
            return await _reply(send, 413, "request body too large", close=True)
        body = await self._read_body(receive)
        if body is None:
            return await _reply(send, 408, "request body too slow or too large", close=True)
        text = body.decode("utf-8", "replace")
        query = scope.get("query_string", b"").decode("latin-1")
        loop = asyncio.get_running_loop()
        status, out_headers, out = await loop.run_in_executor(
            self.pool, lambda: dispatch(self.app, text, query=query, headers=headers)
        )
        await _reply(send, status, out or "", headers=out_headers)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, or None when it is late (body_timeout_s) or over the size limit."""
        deadline = time.monotonic() + self.limits.body_timeout_s
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.info(
                    "slackbot: dropped a request whose body did not arrive in %.0f s (%d bytes so far)",
                    self.limits.body_timeout_s,
                    size,
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                log.info("slackbot: refused a request body over %d bytes", self.limits.max_body_bytes)
                return None
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)


async def _reply(send, status: int, text: str, *, headers: dict | None = None, close: bool = False) -> None:
    data = text.encode("utf-8")
    raw = [
        (k.lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, values in (headers or {}).items()
        if k.lower() not in ("content-length", "connection")
        for v in values
    ] or list(_TEXT)
    raw.append((b"content-length", str(len(data)).encode()))
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class BotHTTPServer:
    """uvicorn on a background thread; ``start()`` serves in the background, ``serve_forever()`` in the foreground."""

    def __init__(
        self,
        app: App,
        *,
        host: str = "0.0.0.0",
        port: int = 3000,
        events_path: str = EVENTS_PATH,
        limits: HTTPLimits | None = None,
    ) -> None:
        self.app, self.events_path, self.limits = app, events_path, limits or HTTPLimits()
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(2048)  # connections queue from now on, before uvicorn's loop runs
        self.host, self.port = self._sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="slackbot-http")
        protocol = type("LimitedH11", (_LimitedH11,), {"header_timeout_s": self.limits.header_timeout_s})
        config = uvicorn.Config(
            _SlackASGI(app, events_path=events_path, limits=self.limits, pool=self._pool),
            http=protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            limit_concurrency=self.limits.max_connections,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=self.limits.max_header_bytes,
            backlog=2048,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}{self.events_path}"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> BotHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="slackbot-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the Slack HTTP endpoint did not start on {self.url}")
        return self

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._sock.close()
        self._pool.shutdown(wait=True)
        bot = getattr(self.app, "assistant_bot", None)
        if bot is not None:
            bot.wait_idle(timeout=30)
