"""Slack connector: channels the bot is a member of → thread documents and shared files.

``from_settings(section)`` (``config``) turns the ``[connectors.slack]`` section into a
``SlackConnector``; ``SlackConnectorSettings`` is that section. Names are imported on first use, so
``assistant.settings`` can import ``connectors.slack.config`` without slack_sdk.

Slack app scopes needed (bot token): channels:history, channels:read, groups:history, groups:read,
users:read, users:read.email, files:read.
"""

from __future__ import annotations

from connectors.base import lazy_exports

_HOME = {
    "SlackClient": "client",
    "SlackConfig": "config",
    "SlackConnector": "connector",
    "SlackConnectorSettings": "config",
    "config_from_settings": "config",
    "from_settings": "config",
}
__all__ = sorted(_HOME)

__getattr__ = lazy_exports(__name__, _HOME)
