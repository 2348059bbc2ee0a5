"""``assistant slack`` (run the bot: Socket Mode or HTTP); also mounts ``assistant schedule …``/``assistant scheduler`` (``assistant.reports.cli``) with the Slack poster.

The bot needs ``slack.bot_token`` plus either ``slack.app_token`` (Socket Mode: no public URL) or
``slack.signing_secret`` (HTTP: Slack's Events API, slash commands and interactivity all POST to
``http://<host>:<port>/slack/events``). See README "Install in your Slack workspace".
The demo of the bot against a local fake Slack is a script only (``python scripts/slack_demo.py``
from a source checkout): it uses the tests' fake Slack, and the package never imports ``tests``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import typer

log = logging.getLogger(__name__)


def _warm_up(assistant) -> None:
    try:
        assistant.engine.embedder  # noqa: B018 - loading is the point
        assistant.llm  # noqa: B018
    except Exception as e:  # noqa: BLE001 - the first question will report it properly
        log.warning("slackbot: warm-up failed (%s); the first question will try again", e)


def _start_scheduler(settings, assistant):
    """Scheduled reports run in the bot process (exactly-once is the scheduler's job, so a second
    ``assistant scheduler`` process is harmless)."""
    from assistant.reports import Scheduler
    from assistant.slackbot.report_posting import SlackPoster

    sched = Scheduler(assistant, SlackPoster.from_settings(settings), settings=settings)
    sched.start()
    return sched


def _shutdown(bolt, assistant, reports) -> None:
    if reports is not None:
        reports.stop()
    bolt.assistant_bot.close()
    assistant.close()


def _slack_poster(settings):
    from assistant.slackbot.report_posting import SlackPoster

    return SlackPoster.from_settings(settings)


def register(app: typer.Typer, get_settings: Callable) -> None:
    """``slack``, and the scheduled reports' commands posting through Slack."""
    from assistant.reports import cli as reports_cli

    reports_cli.register(app, get_settings, make_poster=_slack_poster)

    @app.command("slack")
    def slack(
        socket: bool = typer.Option(False, "--socket", help="Socket Mode (needs slack.app_token, xapp-…)"),
        http: bool = typer.Option(False, "--http", help="HTTP Events API (needs slack.signing_secret)"),
        host: str = typer.Option("0.0.0.0", "--host", help="HTTP mode: interface to listen on"),
        port: int = typer.Option(3000, "--port", min=0, max=65535, help="HTTP mode: port"),
        workers: int = typer.Option(
            8, "--workers", min=1, max=64, help="questions worked on at the same time"
        ),
        scheduler: bool = typer.Option(
            True, "--scheduler/--no-scheduler", help="also post scheduled reports from this process"
        ),
    ) -> None:
        """Run the Slack bot: answers mentions, DMs, /ask and /summarize with cited, permission-safe answers."""
        from urllib.error import URLError

        from slack_sdk.errors import SlackApiError

        from assistant.errors import ConfigError
        from assistant.service import Assistant
        from assistant.slackbot.app import create_app, serve_http, socket_mode_handler

        if socket == http:
            raise ConfigError(
                "Choose one: `assistant slack --socket` (Socket Mode, no public URL) or "
                "`assistant slack --http --port 3000` (Events API behind a URL)."
            )
        settings = get_settings()
        assistant = Assistant(settings)
        bolt = create_app(settings, assistant, workers=workers)
        # load the embedder and the model now, in the background, so the first question is not the slow one
        threading.Thread(target=_warm_up, args=(assistant,), name="slackbot-warmup", daemon=True).start()
        reports = _start_scheduler(settings, assistant) if scheduler else None
        if socket:
            handler = socket_mode_handler(bolt, settings)
            typer.echo("Slack bot connected over Socket Mode. Ctrl-C to stop.", err=True)
            try:
                handler.start()
            except SlackApiError as e:  # a wrong or revoked xapp- token: one line, not a traceback
                code = e.response.get("error") if e.response is not None else "unknown"
                raise ConfigError(
                    f"Slack refused the app-level token ({code}): set slack.app_token "
                    "(ASSISTANT_SLACK__APP_TOKEN) to an xapp-… token with connections:write "
                    "(Basic Information → App-Level Tokens)."
                ) from None
            except (OSError, URLError) as e:
                raise ConfigError(
                    f"Could not reach Slack for Socket Mode ({getattr(e, 'reason', None) or e}): "
                    "check the network or proxy."
                ) from None
            finally:
                _shutdown(bolt, assistant, reports)
            return
        server = serve_http(bolt, host=host, port=port)
        typer.echo(
            f"Slack bot listening on {server.url} (Request URL for events, commands and interactivity). "
            "Ctrl-C to stop.",
            err=True,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        server.start()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            _shutdown(bolt, assistant, reports)
