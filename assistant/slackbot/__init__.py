"""The Slack bot: a bolt app that answers questions with cited, permission-safe answers.

``create_app(settings, assistant, client=None)`` (``app``) builds the bolt App; ``handlers`` holds
the work done after Slack is acknowledged; ``identity`` maps Slack users and channels to the
principals retrieval filters by; ``blocks`` formats Block Kit messages; ``cli`` adds
``assistant slack`` and ``assistant slack-demo``.
"""

from assistant.slackbot.app import create_app, serve_http, socket_mode_handler

__all__ = ["create_app", "serve_http", "socket_mode_handler"]
