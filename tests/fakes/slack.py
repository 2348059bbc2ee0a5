"""A local fake of the Slack Web API that the real ``slack_sdk.WebClient(base_url=fake.url)`` talks to.

``FakeSlack`` is a ``SlackWorld`` (the workspace state and scenario builder, see
``tests/fakes/slack_world.py``) served by a threaded ``http.server`` on 127.0.0.1, port 0.

Serves: auth.test, conversations.list/info/members/history/replies/open, users.info/list/
lookupByEmail, files.info, chat.getPermalink/postMessage/update/delete/postEphemeral, reactions.add,
views.open, and file downloads at ``url_private`` (same server, bearer token required; without it
Slack answers a 200 HTML login page, and so does the fake). Requests may be form-encoded, JSON or
query strings, POST or GET; the token comes from ``Authorization: Bearer`` or a ``token`` param
(missing → ``not_authed``, wrong → ``invalid_auth``). Errors have Slack's shapes: HTTP 200 with
``{"ok": false, "error": ...}``, and ``ratelimited`` as HTTP 429 with ``Retry-After``.

For assertions: ``requests`` (every request: method, path, params, headers, status),
``calls(path)``, ``assert_received(path, min_count=1, **params)``; ``posted`` / ``updates`` /
``ephemerals`` / ``reactions`` / ``views`` / ``responses`` (posts to ``response_url(name)``) hold
what a bot did; ``thread(channel, ts)`` and ``message(channel, ts)`` show the current state. Faults: ``fail_next(method, n,
status=429)`` (429 with Retry-After, 5xx, or ``status=0`` to drop the connection),
``invalidate_cursors()``.

Bot tests: ``message_event`` (posts a message and returns the Events API envelope for it) and
``slash_command`` (form fields with a ``response_url`` served here) build inbound payloads; signing
and delivering them to the bot is the test's job.

Not served: Events API delivery, Socket Mode, OAuth, files.upload, search.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.slack_world import API, SlackError, SlackWorld

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDBOOK = REPO_ROOT / ".." / "shared" / "corpora" / "sourcegraph-handbook" / "content"


@dataclass
class Recorded:
    http_method: str
    path: str  # "/chat.postMessage" (the "/api" prefix removed) or "/files-pri/..."
    params: dict
    headers: dict
    body: bytes = b""
    status: int = 200
    at: float = field(default_factory=time.time)


class FakeSlack(SlackWorld):
    """The workspace plus the server. Use as a context manager, or call ``close()``."""

    def __init__(self, *, token: str = "xoxb-fake-token", latency_s: float = 0.0, **world) -> None:
        super().__init__(**world)
        self.tokens = {token}
        self.token = token
        self.latency_s = latency_s
        self.requests: list[Recorded] = []
        self.responses: list[dict] = []  # JSON posted to response_url(...) links
        self._faults: dict[str, list[tuple[int, str, int] | None]] = {}
        self._delays: dict[str, list[float]] = {}
        self.held = threading.Event()  # hold_next: set while a held call waits
        self._release = threading.Event()
        self._holds: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        host, port = self._server.server_address[:2]
        self.root = f"http://{host}:{port}"
        self.url = f"{self.root}/api/"  # WebClient(base_url=fake.url)
        self.public_base = self.root
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def response_url(self, name: str = "r1") -> str:
        """A ``response_url`` for a slash command or action payload; what is posted to it lands in
        ``responses`` as ``{"name": name, **json_body}``."""
        return f"{self.root}/response/{name}"

    def thread(self, channel: str, thread_ts: str) -> list[dict]:
        """The current messages of a thread (root first), bot posts and chat.update edits included."""
        with self.lock:
            cid = self.channel_id(channel)
            root = self.messages[cid].get(thread_ts)
            return ([dict(root)] if root else []) + [dict(m) for m in self._replies(cid, thread_ts)]

    # ---- inbound payloads for bot tests (the fake does not deliver them: sign and POST them yourself) ---
    def message_event(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None, mention: bool = False
    ) -> dict:
        """Post ``text`` into the workspace (so history/replies see it) and return the Events API
        envelope Slack would send: ``app_mention`` when ``mention`` (text should contain
        ``<@UBOT>``), else ``message`` (``channel_type`` "im" in DMs)."""
        with self.lock:
            cid = self.channel_id(channel)
            ts = self.post(cid, user, text, thread_ts=thread_ts)
            ch = self.channels[cid]
            event = {
                "type": "app_mention" if mention else "message",
                "user": user,
                "text": text,
                "ts": ts,
                "channel": cid,
                "event_ts": ts,
                "team": self.team_id,
                "channel_type": "im"
                if ch.is_im
                else "mpim"
                if ch.is_mpim
                else "group"
                if ch.private
                else "channel",
            }
            if thread_ts:
                event["thread_ts"] = thread_ts
            return {
                "token": "verification-token",
                "team_id": self.team_id,
                "api_app_id": "AFAKE",
                "event": event,
                "type": "event_callback",
                "event_id": self._new_id("Ev"),
                "event_time": int(float(ts)),
                "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user, "is_bot": True}],
            }

    def slash_command(self, command: str, text: str, *, user: str, channel: str) -> dict:
        """The form fields of a slash command invocation (URL-encode them as the request body)."""
        with self.lock:
            cid = self.channel_id(channel)
            return {
                "token": "verification-token",
                "team_id": self.team_id,
                "team_domain": self.domain,
                "channel_id": cid,
                "channel_name": self.channels[cid].name,
                "user_id": user,
                "user_name": self.users[user].name,
                "command": command,
                "text": text,
                "api_app_id": "AFAKE",
                "response_url": self.response_url(self._new_id("cmd")),
                "trigger_id": self._new_id("trig"),
            }

    # ---- faults --------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        n: int = 1,
        *,
        status: int = 429,
        error: str = "ratelimited",
        retry_after: int = 0,
        after: int = 0,
    ) -> None:
        """The next ``n`` calls of ``method`` ("conversations.history", or "*" for any) fail.

        status 429 → ``ratelimited`` with ``Retry-After: retry_after``; 5xx → that status with
        ``error``; 200 → ``ok:false`` with ``error``; 0 → the connection is closed without a reply.
        ``after``: let that many calls of ``method`` through first (a failure in the middle of a run).
        """
        with self.lock:
            self._faults.setdefault(method, []).extend([None] * after + [(status, error, retry_after)] * n)

    def delay_next(self, method: str, seconds: float, n: int = 1) -> None:
        """The next ``n`` calls of ``method`` answer only after ``seconds`` (a client's read timeout)."""
        with self.lock:
            self._delays.setdefault(method, []).extend([seconds] * n)

    def hold_next(self, method: str) -> None:
        """The next call of ``method`` waits, unanswered, until ``release()`` (``held`` is set meanwhile):
        the caller is stuck in the middle of its work, where a crash would leave it."""
        with self.lock:
            self._holds[method] = self._holds.get(method, 0) + 1
            self._release.clear()

    def release(self) -> None:
        self._release.set()

    def _take_fault(self, method: str) -> tuple[int, str, int] | None:
        with self.lock:
            for key in (method, "*"):
                if self._faults.get(key):
                    return self._faults[key].pop(0)  # None: a call let through by ``after``
        return None

    # ---- traffic assertions --------------------------------------------------------------------
    def calls(self, path: str, **params) -> list[Recorded]:
        path = "/" + path.lstrip("/")
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path == path and all(str(r.params.get(k)) == str(v) for k, v in params.items())
            ]

    def assert_received(
        self, path: str, *, min_count: int = 1, max_count: int | None = None, **params
    ) -> list[Recorded]:
        got = self.calls(path, **params)
        if len(got) < min_count or (max_count is not None and len(got) > max_count):
            seen = sorted({r.path for r in self.requests})
            raise AssertionError(
                f"expected {min_count}..{max_count} calls of {path} {params or ''}, got {len(got)}; "
                f"paths seen: {seen}"
            )
        return got

    def api_call_count(self) -> int:
        with self.lock:
            return sum(1 for r in self.requests if not r.path.startswith("/files-pri/"))

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # ---- scenarios ------------------------------------------------------------------------------
    def populate(
        self,
        *,
        channels: int = 3,
        roots_per_channel: int = 10,
        replies_every: int = 3,
        replies: int = 2,
        private_every: int = 3,
        files_every: int = 0,
        users: int = 4,
        start_ago: float = 5 * 86400,
    ) -> dict:
        """A workspace from handbook text: channels (every ``private_every``-th private), roots with
        threads of ``replies`` replies on every ``replies_every``-th root, a handbook file on every
        ``files_every``-th root (0 = none). Returns ids: {"users": [...], "channels": [...]}.
        """
        docs = handbook_paragraphs(channels * roots_per_channel * (1 + replies) + 10)
        uids = [
            self.add_user(f"user{i}", email=f"user{i}@example.com", real_name=f"User {i}")
            for i in range(users)
        ]
        cids, k = [], 0
        total = channels * roots_per_channel
        step = start_ago / max(1, total * (1 + replies))
        t = time.time() - start_ago
        for c in range(channels):
            private = private_every > 0 and c % private_every == private_every - 1
            members = uids[: max(1, len(uids) // 2)] if private else uids
            cid = self.add_channel(f"{'priv' if private else 'chan'}-{c}", private=private, members=members)
            cids.append(cid)
            for r in range(roots_per_channel):
                name, text = docs[k % len(docs)]
                k += 1
                files = []
                if files_every and r % files_every == 0:
                    files = [
                        self.add_file(name.replace("/", "_"), text, mimetype="text/markdown", user=members[0])
                    ]
                t += step
                root = self.post(cid, members[r % len(members)], text[:600], ts=f"{t:.6f}", files=files)
                if replies_every and r % replies_every == 0:
                    for j in range(replies):
                        t += step
                        self.post(
                            cid,
                            members[(r + j + 1) % len(members)],
                            docs[k % len(docs)][1][:400],
                            thread_ts=root,
                            ts=f"{t:.6f}",
                        )
                        k += 1
        return {"users": uids, "channels": cids}


def handbook_paragraphs(n: int) -> list[tuple[str, str]]:
    """Up to ``n`` (relative path, paragraph) pairs from the handbook corpus, or synthetic text if absent."""
    out: list[tuple[str, str]] = []
    if HANDBOOK.is_dir():
        for path in sorted(HANDBOOK.rglob("*.md")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for para in (p.strip() for p in text.split("\n\n")):
                if len(para) > 80 and not para.startswith(("---", "<", "|", "```")):
                    out.append((str(path.relative_to(HANDBOOK)), para))
                    break
            if len(out) >= n:
                return out
    while len(out) < n:
        i = len(out)
        out.append(
            (
                f"synthetic/{i}.md",
                (
                    f"Synthetic paragraph {i} about process number {i * 7} and the policy "
                    f"for topic {i % 13}, written so that search has something to find."
                ),
            )
        )
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake: FakeSlack = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        path = url.path[4:] if url.path.startswith("/api/") else url.path
        params: dict = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").lower()
        if body and "json" in ctype:
            try:
                params.update(json.loads(body))
            except ValueError:
                return self._send(200, {"ok": False, "error": "invalid_json"})
        elif body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        headers = {k: v for k, v in self.headers.items()}
        rec = Recorded(self.command, path, params, headers, body)
        with fake.lock:
            fake.requests.append(rec)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        auth = self.headers.get("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token")
        if path.startswith("/files-pri/"):
            return self._download(fake, path, token, rec)
        if path.startswith("/response/"):  # a slash command's / an action's response_url
            with fake.lock:
                fake.responses.append({"name": path[len("/response/") :], **params})
            return self._raw(200, b"ok", "text/plain")
        method = path.lstrip("/")
        with fake.lock:
            delay = fake._delays[method].pop(0) if fake._delays.get(method) else 0.0
            hold = fake._holds.get(method, 0) > 0
            if hold:
                fake._holds[method] -= 1
        if delay:
            time.sleep(delay)
        if hold:
            fake.held.set()
            fake._release.wait(120)
            rec.status = 0
            self.close_connection = True
            return
        fault = fake._take_fault(method)
        if fault:
            status, error, retry_after = fault
            rec.status = status
            if status == 0:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            extra = {"Retry-After": str(retry_after)} if status == 429 else {}
            return self._send(status, {"ok": False, "error": error}, extra)
        if not token:
            return self._send(200, {"ok": False, "error": "not_authed"})
        if token not in fake.tokens:
            return self._send(200, {"ok": False, "error": "invalid_auth"})
        handler = API.get(method)
        if handler is None:
            return self._send(200, {"ok": False, "error": "unknown_method"})
        try:
            with fake.lock:
                result = handler(fake, params)
        except SlackError as e:
            return self._send(200, {"ok": False, "error": e.code})
        self._send(200, {"ok": True, **result})

    def _download(self, fake: FakeSlack, path: str, token: str | None, rec: Recorded) -> None:
        fid = path.split("/")[2].split("-", 1)[-1]
        fault = fake._take_fault("files-pri")
        if fault:
            rec.status = fault[0]
            return self._send(fault[0], {"ok": False, "error": fault[1]}, {"Retry-After": str(fault[2])})
        if token not in fake.tokens:  # Slack serves its login page, not an error status
            rec.status = 200
            return self._raw(200, b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>", "text/html")
        with fake.lock:
            data, meta = fake.file_content.get(fid), fake.files.get(fid)
        if data is None or meta is None:
            rec.status = 404
            return self._raw(404, b"Not Found", "text/plain")
        self._raw(200, data, meta["mimetype"])

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _raw(self, status: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a read timeout): as with Slack
            self.close_connection = True
