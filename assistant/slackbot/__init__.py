"""The Slack bot: a bolt app that answers questions with cited, permission-safe answers.

``create_app(settings, assistant, client=None)`` (``app``) builds the bolt App; ``handlers`` holds
the work done after Slack is acknowledged; ``identity`` maps Slack users and channels to the
principals retrieval filters by; ``blocks`` formats Block Kit messages; ``cli`` adds
``assistant slack`` and ``assistant slack-demo``.
"""


__all__ = ["create_app", "serve_http", "socket_mode_handler"]


def __getattr__(name: str):
    """Import the bolt app on first use, so ``import assistant.slackbot.cli`` (and with it every
    ``assistant`` command) works where slack_bolt is not installed."""
    if name in __all__:
        from assistant.slackbot import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
