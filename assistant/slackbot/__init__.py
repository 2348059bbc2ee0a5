"""The Slack bot: a bolt app that answers questions with cited, permission-safe answers.

``create_app(settings, assistant, client=None)`` (``app``) builds the bolt App; ``server`` serves it
over HTTP behind uvicorn with limits (body size, header/body timeouts, connections; signature checked
first); ``handlers`` holds the work done after Slack is acknowledged; ``inbox`` keeps accepted
questions until answered, so a crash does not lose one; ``identity`` maps Slack users and channels to
the principals retrieval filters by; ``blocks`` formats Block Kit messages; ``cli`` adds
``assistant slack`` (and mounts the scheduled reports' commands); ``web`` builds the Web API
client; ``report_blocks``/``report_posting`` render and post scheduled reports; ``schedule_command``
is ``/schedule``. The demo against a fake Slack is ``python scripts/slack_demo.py`` (a script only).
"""

__all__ = ["create_app", "serve_http", "socket_mode_handler"]


def __getattr__(name: str):
    """Import the bolt app on first use, so ``import assistant.slackbot.cli`` (and with it every
    ``assistant`` command) works where slack_bolt is not installed."""
    if name in __all__:
        from assistant.slackbot import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
