"""Helpers for the scheduler tests: a controllable clock, a poster that "crashes" around the real
post, and a scheduler *process* (``python -m tests.fakes.scheduler_support``) for the test that runs
two processes against one store.

The process entry point drives the real ``Scheduler`` + ``SlackPoster`` against the fake Slack at a
list of fake times, after a file barrier so both processes tick at the same moments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path


class Clock:
    """``now()`` for the scheduler; tests move it with ``set``/``advance``."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def set(self, t: datetime) -> None:
        self.t = t

    def advance(self, **kw) -> datetime:
        self.t = self.t + timedelta(**kw)
        return self.t


class Crash(BaseException):
    """Stands for the process dying: not an ``Exception``, so nothing in the scheduler catches it."""


class CrashingPoster:
    """Wraps a real poster; the next ``post`` dies before (``when="before"``) or after the message
    reaches Slack (``when="after"``, i.e. before the scheduler can record its ts)."""

    def __init__(self, inner, *, when: str = "before") -> None:
        self.inner, self.when = inner, when

    def resolve(self, channel: str) -> str:
        return self.inner.resolve(channel)

    def audience(self, channel_id: str):
        return self.inner.audience(channel_id)

    def find(self, channel_id: str, run_key: str):
        return self.inner.find(channel_id, run_key)

    def post(self, channel_id: str, **kw) -> str:
        if self.when == "after":
            self.inner.post(channel_id, **kw)
        raise Crash(f"process died {self.when} posting {kw.get('run_key')}")


def set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def _barrier(folder: Path, name: str, parties: int, timeout: float = 120.0) -> None:
    (folder / f"ready-{name}").write_text("1")
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise SystemExit("barrier timed out")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--slack-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--barrier", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--parties", type=int, default=2)
    p.add_argument("--times", required=True, help="JSON list of ISO times to tick at")
    a = p.parse_args(argv)

    from assistant.reports import Scheduler
    from assistant.service import Assistant
    from assistant.settings import load_settings
    from assistant.slackbot.report_posting import SlackPoster

    settings = load_settings(
        environ={},
        overrides={
            "data_dir": a.data_dir,
            "llm": {"model": "none"},
            "slack": {"bot_token": a.token, "api_url": a.slack_url},
        },
    )
    times = [datetime.fromisoformat(t) for t in json.loads(a.times)]
    clock = Clock(times[0])
    with Assistant(settings, llm=None) as assistant:
        sched = Scheduler(
            assistant,
            SlackPoster.from_settings(settings),
            settings=settings,
            now=clock,
            use_llm=False,
            owner=a.name,
        )
        _barrier(Path(a.barrier), a.name, a.parties)
        results = []
        for t in times:
            clock.set(t)
            results += [{"key": r.run_key, "status": r.status} for r in sched.tick()]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
