"""``assistant slack`` (run the bot: Socket Mode or HTTP) and ``assistant slack-demo`` (a local fake Slack);
also mounts ``assistant schedule …``/``assistant scheduler`` (``assistant.reports.cli``) with the Slack poster.

The bot needs ``slack.bot_token`` plus either ``slack.app_token`` (Socket Mode: no public URL) or
``slack.signing_secret`` (HTTP: Slack's Events API, slash commands and interactivity all POST to
``http://<host>:<port>/slack/events``). See README "Install in your Slack workspace".
The demo lives in ``scripts/slack_demo.py`` because it uses the test fake of Slack, which is not
part of the installed package; ``assistant slack-demo`` runs it from a source checkout.
"""

from __future__ import annotations

import logging
import runpy
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import typer

log = logging.getLogger(__name__)

DEMO_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slack_demo.py"


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
    """``slack``, ``slack-demo``, and the scheduled reports' commands posting through Slack."""
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

    @app.command("slack-demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def slack_demo(
        ctx: typer.Context,
        no_llm: bool = typer.Option(False, "--no-llm", help="extractive answers only (no model; fastest)"),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="where the demo index goes (default: a temp dir)"
        ),
    ) -> None:
        """See the bot work without Slack credentials: a local fake Slack, the sample documents, a few questions."""
        if not DEMO_SCRIPT.exists():
            typer.echo(
                "The demo needs a source checkout: run `python scripts/slack_demo.py` from the repository.",
                err=True,
            )
            raise typer.Exit(2)
        argv = [
            str(DEMO_SCRIPT),
            *(["--no-llm"] if no_llm else []),
            *(["--data-dir", str(data_dir)] if data_dir else []),
            *ctx.args,
        ]
        old = sys.argv
        sys.argv = argv
        try:
            runpy.run_path(str(DEMO_SCRIPT), run_name="__main__")
        finally:
            sys.argv = old
