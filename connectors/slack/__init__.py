"""Slack connector: channels the bot is a member of → thread documents and shared files.

``from_settings(section)`` builds a ``SlackConnector`` from any object with the attributes of
``[connectors.slack]`` (duck-typed: this package never imports ``assistant.settings``). Secrets may
be pydantic ``SecretStr`` or plain strings.

Slack app scopes needed (bot token): channels:history, channels:read, groups:history, groups:read,
users:read, users:read.email, files:read.
"""

from __future__ import annotations

from connectors.slack.client import SlackClient
from connectors.slack.connector import SlackConfig, SlackConnector

__all__ = ["SlackClient", "SlackConfig", "SlackConnector", "config_from_settings", "from_settings"]


def _secret(v) -> str:
    return v.get_secret_value() if hasattr(v, "get_secret_value") else (v or "")


def config_from_settings(section) -> SlackConfig:
    """A ``SlackConfig`` from a settings section; attributes it lacks keep their defaults."""
    fields = {
        name: getattr(section, name)
        for name in SlackConfig.__dataclass_fields__
        if name != "bot_token" and hasattr(section, name)
    }
    for key in ("channels", "exclude_channels"):
        if key in fields:
            fields[key] = tuple(fields[key] or ())
    return SlackConfig(bot_token=_secret(getattr(section, "bot_token", None)), **fields)


def from_settings(section, **kw) -> SlackConnector:
    """The connector for ``[connectors.slack]``; ``kw`` goes to ``SlackConnector`` (client, clock)."""
    return SlackConnector(config_from_settings(section), **kw)
