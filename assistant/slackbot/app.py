"""The bolt app factory, its thin listeners, and ``serve_http``.

``create_app(settings, assistant, client=None)`` returns a ``slack_bolt.App`` whose listeners only
parse the request, acknowledge it, drop duplicates and hand the work to ``handlers.BotCore``'s own
worker pool — so Slack gets its acknowledgement within milliseconds however long an answer takes
(``process_before_response=False``; events are acknowledged by bolt before the listener runs,
commands and button clicks call ``ack()`` first). Request signatures and timestamps are verified by
bolt's ``RequestVerification`` middleware before any listener or Web API call (forged or older than
five minutes → 401); over HTTP ``server.dispatch`` checks it first, on the raw body. The Web API
client and its retries come from ``web`` (429, connection errors, read timeouts of read-only
methods). A wrong token or an unreachable Slack at start-up is one clear ``ConfigError``, not a traceback.

``serve_http(app, host=, port=)`` runs the app behind uvicorn with limits (``server``: body size,
header and body timeouts, connections); ``socket_mode_handler(app, settings)`` builds the Socket
Mode handler. Not here: what the bot says (``handlers``, ``blocks``).
"""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient

from assistant.errors import ConfigError
from assistant.slackbot import blocks as bk
from assistant.slackbot.handlers import BotCore
from assistant.slackbot.identity import Identity
from assistant.slackbot.server import EVENTS_PATH, BotHTTPServer, HTTPLimits, OneLineLogs, dispatch, one_line
from assistant.slackbot.web import make_client, secret, who_am_i, with_retries

__all__ = ["BotHTTPServer", "HTTPLimits", "create_app", "dispatch", "serve_http", "socket_mode_handler"]

log = logging.getLogger(__name__)
_BOLT_LOG = logging.getLogger("assistant.slackbot.bolt")
if not any(isinstance(f, OneLineLogs) for f in _BOLT_LOG.filters):
    _BOLT_LOG.addFilter(
        OneLineLogs()
    )  # bolt logs request bodies (signed ones: ours checks forged ones first)


def create_app(
    settings,
    assistant,
    client: WebClient | None = None,
    *,
    workers: int = 8,
    identity_ttl_s: float = 3600.0,
    recover: bool = True,
) -> App:
    """A bolt App wired to ``assistant`` (``assistant.service.Assistant``). ``app.assistant_bot`` is the core.
    ``recover``: finish, in the background, the questions a stopped process left unanswered."""
    client = with_retries(client) if client is not None else make_client(settings)
    me = who_am_i(
        client, api_url=settings.slack.api_url
    )  # who we are: our user id (to drop self-mentions) and the workspace
    identity = Identity(
        client,
        team_id=me["team_id"],
        workspace_group=settings.slack.workspace_principal,
        bot_user_id=me["user_id"],
        ttl_s=identity_ttl_s,
    )
    core = BotCore(
        settings,
        assistant,
        client,
        identity,
        bot_user_id=me["user_id"],
        bot_id=me.get("bot_id"),
        workers=workers,
    )
    app = App(
        client=client,
        signing_secret=secret(settings.slack.signing_secret) or "",
        process_before_response=False,
        token_verification_enabled=False,
        name="assistant",
        listener_executor=core.listener_executor,
        logger=_BOLT_LOG,
    )
    app.assistant_bot = core  # type: ignore[attr-defined]
    _listen(app, core)
    if recover:
        core.recover()
    return app


def _listen(app: App, core: BotCore) -> None:
    def retry_of(request) -> str | None:
        got = request.headers.get("x-slack-retry-num") if request is not None else None
        return got[0] if got else None

    @app.event("app_mention")
    def on_mention(event, body, request):
        if event.get("bot_id") or not event.get("user"):
            return
        if not core.accept(
            (body.get("event_id"), f"msg:{event['channel']}:{event['ts']}"),
            "answer_message",
            channel=event["channel"],
            user=event["user"],
            text=event.get("text", ""),
            ts=event["ts"],
            thread_ts=event.get("thread_ts"),
            is_dm=event.get("channel_type") == "im",
        ):
            log.info(
                "slackbot: dropped duplicate event %s (retry %s)",
                one_line(body.get("event_id")),
                one_line(retry_of(request)),
            )

    @app.event("message")
    def on_message(event, body, request):
        # Direct messages only; channel messages reach us as app_mention. Edits, joins and bots are ignored.
        if (
            event.get("channel_type") != "im"
            or event.get("subtype")
            or event.get("bot_id")
            or not event.get("user")
        ):
            return
        if not core.accept(
            (body.get("event_id"), f"msg:{event['channel']}:{event['ts']}"),
            "answer_message",
            channel=event["channel"],
            user=event["user"],
            text=event.get("text", ""),
            ts=event["ts"],
            thread_ts=event.get("thread_ts"),
            is_dm=True,
        ):
            log.info(
                "slackbot: dropped duplicate event %s (retry %s)",
                one_line(body.get("event_id")),
                one_line(retry_of(request)),
            )

    @app.command("/ask")
    def on_ask(ack, command):
        question = (command.get("text") or "").strip()
        ack(text=f"Looking that up: _{bk.safe_text(question[:200])}_ …" if question else "")
        core.accept(
            (f"cmd:{command.get('trigger_id')}",),
            "answer_command",
            text=question,
            user=command["user_id"],
            channel=command.get("channel_id"),
            response_url=command.get("response_url"),
        )

    @app.command("/summarize")
    def on_summarize(ack, command):
        ack(text="Summarizing… this can take a little while.")
        core.accept(
            (f"cmd:{command.get('trigger_id')}",),
            "summarize_command",
            text=command.get("text") or "",
            user=command["user_id"],
            channel=command.get("channel_id"),
            response_url=command.get("response_url"),
        )

    @app.command("/schedule")
    def on_schedule(ack, command):
        ack()
        core.accept(
            (f"cmd:{command.get('trigger_id')}",),
            "schedule_command",
            text=command.get("text") or "",
            user=command["user_id"],
            channel=command.get("channel_id"),
            response_url=command.get("response_url"),
        )

    @app.action(bk.FEEDBACK_ACTION)
    def on_feedback(ack, action, body, respond):
        ack()
        vote = 1 if action["action_id"] == bk.FEEDBACK_UP else -1
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        core.submit(
            core.record_feedback,
            token=action.get("value", ""),
            vote=vote,
            user=body["user"]["id"],
            channel=channel,
            respond=respond,
        )

    @app.error
    def on_error(error, body):
        log.error(
            "slackbot: unhandled error for a %s request: %s",
            one_line((body or {}).get("type", "?")),
            one_line(error),
        )


def serve_http(
    app: App,
    *,
    host: str = "0.0.0.0",
    port: int = 3000,
    events_path: str = EVENTS_PATH,
    limits: HTTPLimits | None = None,
) -> BotHTTPServer:
    """Bind (port 0 = any free port) and return the server, not yet serving: call ``start()`` or ``serve_forever()``.
    ``limits`` default to the bot's ``settings.slack.http_*``."""
    if not app._signing_secret:  # type: ignore[attr-defined]
        raise ConfigError(
            "HTTP mode needs the app's signing secret: set slack.signing_secret "
            "(ASSISTANT_SLACK__SIGNING_SECRET) from the app's Basic Information page."
        )
    bot = getattr(app, "assistant_bot", None)
    if limits is None and bot is not None:
        s = bot.settings.slack
        limits = HTTPLimits(
            max_body_bytes=int(s.http_max_body_kb * 1024),
            header_timeout_s=s.http_header_timeout_s,
            body_timeout_s=s.http_body_timeout_s,
            max_connections=s.http_max_connections,
        )
    return BotHTTPServer(app, host=host, port=port, events_path=events_path, limits=limits)


def socket_mode_handler(app: App, settings):
    """The Socket Mode handler (app-level ``xapp-`` token); ``.start()`` connects and blocks."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    token = secret(settings.slack.app_token)
    if not token:
        raise ConfigError(
            "Socket Mode needs an app-level token: set slack.app_token (ASSISTANT_SLACK__APP_TOKEN=xapp-...) "
            "with the connections:write scope, or run `assistant slack --http`."
        )
    return SocketModeHandler(app, app_token=token, web_client=app.client)
