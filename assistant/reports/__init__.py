"""Scheduled "what changed" reports: what a report says, when it runs, and running it exactly once.

- ``report``: ``build_report`` asks the summarizer what changed in a scope during one period, for
  one audience, and arranges it as a ``Report`` (bullets by source, busy threads, decisions).
- ``cadence``: cron expressions and phrases ("every monday 9:00") with a time zone, across clock changes.
- ``scheduler``: persisted schedules (``add_schedule``, ``list_schedules``, ...) and the
  ``Scheduler`` that runs each period exactly once through an injected ``Poster``.
- ``cli``: ``assistant schedule add|list|remove|run-now`` and ``assistant scheduler``.

This package knows nothing of Slack (an import-contract test checks it): Block Kit, posting and
``/schedule`` live in ``assistant.slackbot`` (``report_blocks``, ``report_posting``, ``schedule_command``).
"""

import importlib

# name → submodule; imported on first use (PEP 562), so ``assistant.reports.cli`` loads fast
_HOME = {
    **dict.fromkeys(("Cadence", "next_fire", "parse_cadence", "previous_fire"), "cadence"),
    **dict.fromkeys(("BUSY_THREAD_MESSAGES", "Decision", "Report", "build_report", "scope_label"), "report"),
    **dict.fromkeys(
        (
            "Poster",
            "RunResult",
            "Schedule",
            "Scheduler",
            "add_schedule",
            "get_schedule",
            "list_schedules",
            "remove_schedule",
            "runs_of",
        ),
        "scheduler",
    ),
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"assistant.reports.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
