"""The bolt app factory, its thin listeners, and a small threaded HTTP server for the Events API.

``create_app(settings, assistant, client=None)`` returns a ``slack_bolt.App`` whose listeners only
parse the request, acknowledge it, drop duplicates and hand the work to ``handlers.BotCore``'s own
worker pool — so Slack gets its acknowledgement within milliseconds however long an answer takes
(``process_before_response=False``; events are acknowledged by bolt before the listener runs,
commands and button clicks call ``ack()`` first). Request signatures and timestamps are verified by
bolt's ``RequestVerification`` middleware before any listener or Web API call (forged or older than
five minutes → 401). Web API calls retry on 429 (``Retry-After``) and on connection errors.

``serve_http(app, host=, port=)`` runs the app behind ``ThreadingHTTPServer`` (one thread per
request, POST ``/slack/events``, GET ``/healthz``); ``socket_mode_handler(app, settings)`` builds
the Socket Mode handler. Not here: what the bot says (``handlers``, ``blocks``).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from assistant.errors import ConfigError
from assistant.slackbot import blocks as bk
from assistant.slackbot.handlers import BotCore
from assistant.slackbot.identity import Identity

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def make_client(settings, *, max_retries: int = 5) -> WebClient:
    token = _secret(settings.slack.bot_token)
    if not token:
        raise ConfigError("No Slack bot token: set slack.bot_token (ASSISTANT_SLACK__BOT_TOKEN=xoxb-...) — "
                          "see README 'Install in your Slack workspace'.")
    return with_retries(WebClient(token=token, base_url=settings.slack.api_url, timeout=30), max_retries=max_retries)


def with_retries(client: WebClient, *, max_retries: int = 5) -> WebClient:
    kinds = {type(h) for h in client.retry_handlers}
    if RateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=max_retries))
    if ConnectionErrorRetryHandler not in kinds:
        client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=2))
    return client


def create_app(settings, assistant, client: WebClient | None = None, *, workers: int = 8,
               identity_ttl_s: float = 3600.0) -> App:
    """A bolt App wired to ``assistant`` (``assistant.service.Assistant``). ``app.assistant_bot`` is the core."""
    client = with_retries(client) if client is not None else make_client(settings)
    me = client.auth_test()  # who we are: our user id (to drop self-mentions) and the workspace
    identity = Identity(client, team_id=me["team_id"], workspace_group=settings.slack.workspace_principal,
                        bot_user_id=me["user_id"], ttl_s=identity_ttl_s)
    core = BotCore(settings, assistant, client, identity, bot_user_id=me["user_id"], bot_id=me.get("bot_id"),
                   workers=workers)
    app = App(client=client, signing_secret=_secret(settings.slack.signing_secret) or "",
              process_before_response=False, token_verification_enabled=False, name="assistant",
              listener_executor=core.listener_executor,
              logger=logging.getLogger("assistant.slackbot.bolt"))
    app.assistant_bot = core  # type: ignore[attr-defined]
    _listen(app, core)
    return app


def _listen(app: App, core: BotCore) -> None:
    def retry_of(request) -> str | None:
        got = request.headers.get("x-slack-retry-num") if request is not None else None
        return got[0] if got else None

    @app.event("app_mention")
    def on_mention(event, body, request):
        if event.get("bot_id") or not event.get("user"):
            return
        if not core.first_time(body.get("event_id"), f"msg:{event['channel']}:{event['ts']}"):
            log.info("slackbot: dropped duplicate event %s (retry %s)", body.get("event_id"), retry_of(request))
            return
        core.submit(core.answer_message, channel=event["channel"], user=event["user"], text=event.get("text", ""),
                    ts=event["ts"], thread_ts=event.get("thread_ts"), is_dm=event.get("channel_type") == "im")

    @app.event("message")
    def on_message(event, body, request):
        # Direct messages only; channel messages reach us as app_mention. Edits, joins and bots are ignored.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id") or not event.get("user"):
            return
        if not core.first_time(body.get("event_id"), f"msg:{event['channel']}:{event['ts']}"):
            log.info("slackbot: dropped duplicate event %s (retry %s)", body.get("event_id"), retry_of(request))
            return
        core.submit(core.answer_message, channel=event["channel"], user=event["user"], text=event.get("text", ""),
                    ts=event["ts"], thread_ts=event.get("thread_ts"), is_dm=True)

    @app.command("/ask")
    def on_ask(ack, command, respond):
        question = (command.get("text") or "").strip()
        ack(text=f"Looking that up: _{bk.safe_text(question[:200])}_ …" if question else "")
        if core.first_time(f"cmd:{command.get('trigger_id')}"):
            core.submit(core.answer_command, text=question, user=command["user_id"], channel=command.get("channel_id"),
                        respond=respond)

    @app.command("/summarize")
    def on_summarize(ack, command, respond):
        ack(text="Summarizing… this can take a little while.")
        if core.first_time(f"cmd:{command.get('trigger_id')}"):
            core.submit(core.summarize_command, text=command.get("text") or "", user=command["user_id"],
                        channel=command.get("channel_id"), respond=respond)

    @app.command("/schedule")
    def on_schedule(ack, command, respond):
        ack()
        if core.first_time(f"cmd:{command.get('trigger_id')}"):
            core.submit(core.schedule_command, text=command.get("text") or "", user=command["user_id"],
                        channel=command.get("channel_id"), respond=respond)

    @app.action(bk.FEEDBACK_ACTION)
    def on_feedback(ack, action, body, respond):
        ack()
        vote = 1 if action["action_id"] == bk.FEEDBACK_UP else -1
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        core.submit(core.record_feedback, token=action.get("value", ""), vote=vote, user=body["user"]["id"],
                    channel=channel, respond=respond)

    @app.error
    def on_error(error, body):
        log.error("slackbot: unhandled error for a %s request: %s", (body or {}).get("type", "?"), error)


# -- HTTP (Events API, slash commands, interactivity: all on one URL) ---------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "assistant-slackbot"

    def log_message(self, fmt, *args) -> None:
        log.debug("http: " + fmt, *args)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/healthz":
            return self._reply(200, {"content-type": ["text/plain"]}, "ok")
        self._reply(404, {}, "")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if path != self.server.events_path:  # type: ignore[attr-defined]
            return self._reply(404, {}, "")
        headers: dict[str, list[str]] = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        self._reply(*dispatch(self.server.app, body, query=query, headers=headers))  # type: ignore[attr-defined]

    def _reply(self, status: int, headers: dict, body: str) -> None:
        data = (body or "").encode("utf-8")
        self.send_response(status)
        for k, values in headers.items():
            if k.lower() == "content-length":
                continue
            for v in values:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def dispatch(app: App, body: str, *, query: str = "", headers: dict[str, list[str]]) -> tuple[int, dict, str]:
    """One raw HTTP request through bolt → (status, headers, body). A body that is not even JSON/form → 400."""
    try:
        request = BoltRequest(body=body, query=query, headers=headers)
    except (ValueError, TypeError, AttributeError):  # bolt parses the body before verifying it; nothing ran yet
        return 400, {"content-type": ["text/plain"]}, "bad request"
    resp = app.dispatch(request)
    return resp.status, resp.headers, resp.body


class BotHTTPServer(ThreadingHTTPServer):
    """One thread per request; ``start()`` serves in the background, ``serve_forever()`` in the foreground."""

    daemon_threads = True
    request_queue_size = 256  # bursts of Slack deliveries queue here instead of being refused

    def __init__(self, app: App, *, host: str = "0.0.0.0", port: int = 3000, events_path: str = EVENTS_PATH) -> None:
        super().__init__((host, port), _Handler)
        self.app, self.events_path = app, events_path
        self.host, self.port = self.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.events_path}"

    def start(self) -> BotHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="slackbot-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        bot = getattr(self.app, "assistant_bot", None)
        if bot is not None:
            bot.wait_idle(timeout=30)


def serve_http(app: App, *, host: str = "0.0.0.0", port: int = 3000, events_path: str = EVENTS_PATH) -> BotHTTPServer:
    """Bind (port 0 = any free port) and return the server, not yet serving: call ``start()`` or ``serve_forever()``."""
    if not app._signing_secret:  # type: ignore[attr-defined]
        raise ConfigError("HTTP mode needs the app's signing secret: set slack.signing_secret "
                          "(ASSISTANT_SLACK__SIGNING_SECRET) from the app's Basic Information page.")
    return BotHTTPServer(app, host=host, port=port, events_path=events_path)


def socket_mode_handler(app: App, settings):
    """The Socket Mode handler (app-level ``xapp-`` token); ``.start()`` connects and blocks."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    token = _secret(settings.slack.app_token)
    if not token:
        raise ConfigError("Socket Mode needs an app-level token: set slack.app_token (ASSISTANT_SLACK__APP_TOKEN=xapp-...) "
                          "with the connections:write scope, or run `assistant slack --http`.")
    return SocketModeHandler(app, app_token=token, web_client=app.client)
