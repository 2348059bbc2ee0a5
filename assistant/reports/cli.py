"""CLI for scheduled reports: ``assistant schedule add|list|remove|run-now`` and ``assistant scheduler``.

``schedule add/list/remove`` touch only the store (no model, no Slack). ``run-now`` and
``scheduler`` build the assistant and post through the poster that ``register`` is given
(``assistant.slackbot.cli`` mounts these commands with the Slack Web API poster, so this module
stays Slack-free); ``scheduler`` blocks, ticking at each fire time (Ctrl-C stops it).
The bot runs the same ``Scheduler`` in a thread, so either one — or both — may run.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from assistant.settings import Settings

if TYPE_CHECKING:
    from assistant.reports.scheduler import Poster


def _store(settings: Settings):
    from assistant.store import Store

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return Store(Path(settings.data_dir) / "store.sqlite")


def register(
    app: typer.Typer, get_settings: Callable[[], Settings], *, make_poster: Callable[[Settings], Poster]
) -> None:
    """Add the commands to ``app``; ``make_poster(settings)`` builds where reports go."""

    def _scheduler(settings: Settings):
        from assistant.reports.scheduler import Scheduler
        from assistant.service import Assistant

        assistant = Assistant(settings)
        return assistant, Scheduler(assistant, make_poster(settings), settings=settings)

    sched = typer.Typer(no_args_is_help=True, help="Scheduled summary reports posted to Slack channels.")
    app.add_typer(sched, name="schedule")

    @sched.command("add")
    def add(
        cron: str = typer.Option(
            ...,
            "--cron",
            "--when",
            help="cron '0 9 * * MON' or a phrase: 'every monday 9:00', 'daily 17:30', 'weekdays 8am', 'every 6h'",
        ),
        tz: str | None = typer.Option(None, "--tz", help="IANA time zone (default: scheduler.timezone)"),
        scope: str | None = typer.Option(
            None,
            "--scope",
            help="slack:#eng, gdrive:Security, a source or a path prefix (default: everything)",
        ),
        to: str = typer.Option(..., "--to", help="channel to post to: #eng or a channel id"),
        empty: str = typer.Option(
            "post", "--empty", help="post: one line 'no changes' when nothing changed; skip: post nothing"
        ),
    ) -> None:
        """Schedule a 'what changed' report."""
        from assistant.reports import add_schedule, next_fire

        settings = get_settings()
        store = _store(settings)
        try:
            s = add_schedule(
                store,
                cron,
                channel=to,
                scope=scope,
                tz=tz or settings.scheduler.timezone,
                empty=empty,
                created_by="cli",
            )
            nxt = next_fire(s.cadence, datetime.now(UTC), anchor=s.created_at)
            nxt = nxt and nxt.astimezone(s.cadence.zone)
        finally:
            store.close()
        typer.echo(f"added {s.describe()}")
        if nxt:
            typer.echo(f"next run: {nxt:%a %d %b %Y %H:%M %Z}")

    @sched.command("list")
    def list_(as_json: bool = typer.Option(False, "--json")) -> None:
        """Show the schedules, their next run and their latest run."""
        from assistant.reports import list_schedules, next_fire, runs_of

        store = _store(get_settings())
        try:
            rows = [(s, (runs_of(store, s.id) or [None])[-1]) for s in list_schedules(store)]
        finally:
            store.close()
        if as_json:
            typer.echo(
                json.dumps(
                    [
                        {
                            "id": s.id,
                            "spec": s.spec,
                            "kind": s.cadence.kind,
                            "expr": s.cadence.expr,
                            "tz": s.tz,
                            "scope": s.scope,
                            "channel": s.channel,
                            "empty": s.empty,
                            "last_run": last,
                        }
                        for s, last in rows
                    ],
                    indent=2,
                )
            )
            return
        if not rows:
            typer.echo(
                "No schedules. Add one: assistant schedule add --cron '0 9 * * MON' --scope slack:#eng --to '#eng'"
            )
        now = datetime.now(UTC)
        for s, last in rows:
            nxt = next_fire(s.cadence, now, anchor=s.created_at)
            nxt = nxt and nxt.astimezone(s.cadence.zone)
            tail = f"  [next: {nxt:%Y-%m-%d %H:%M %Z}]" if nxt else ""
            if last:
                when = datetime.fromtimestamp(last["period_end"], UTC).strftime("%Y-%m-%d %H:%M UTC")
                tail += f"  [last: {last['status']} for {when}{', ts ' + last['ts'] if last['ts'] else ''}]"
            typer.echo(s.describe() + tail)

    @sched.command("remove")
    def remove(
        schedule_id: int = typer.Argument(..., help="the id shown by `assistant schedule list`"),
    ) -> None:
        """Delete a schedule (and its run history)."""
        from assistant.errors import ConfigError
        from assistant.reports import remove_schedule

        store = _store(get_settings())
        try:
            if not remove_schedule(store, schedule_id):
                raise ConfigError(f"No schedule #{schedule_id}. See `assistant schedule list`.")
        finally:
            store.close()
        typer.echo(f"removed schedule #{schedule_id}")

    @sched.command("run-now")
    def run_now(
        schedule_id: int = typer.Argument(..., help="the id shown by `assistant schedule list`"),
    ) -> None:
        """Post the report now (covering the time since the last scheduled run); scheduled runs are unaffected."""
        assistant, scheduler = _scheduler(get_settings())
        if sys.stderr.isatty():  # summarizing can take a while: say what is happening (at a terminal only)
            assistant.progress = lambda line: typer.secho(line, err=True, dim=True)
            typer.secho(f"schedule #{schedule_id}: building the report…", err=True, dim=True)
        with assistant:
            got = scheduler.run_now(schedule_id)
        typer.echo(f"{got.status}: {got.run_key}{' ts ' + got.ts if got.ts else ''}")
        if got.report is not None:
            typer.echo(got.report.text())

    @app.command("scheduler")
    def scheduler_cmd() -> None:
        """Run the report scheduler in the foreground (posts through the Slack Web API)."""
        assistant, scheduler = _scheduler(get_settings())
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo("scheduler running; Ctrl-C stops it", err=True)
        with assistant:
            scheduler.serve(stop=stop)
