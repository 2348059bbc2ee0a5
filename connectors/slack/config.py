"""``[connectors.slack]``: the settings section and the step from settings to a connector.

``SlackConnectorSettings`` is the pydantic section ``assistant.settings`` composes (defaults, help
text and range checks live here, once); ``SlackConfig`` is what the connector runs with (plain
values, the same defaults). ``from_settings(section)`` builds a ``SlackConnector`` from it
(or from any object with those attributes: this package never imports ``assistant.settings``);
secrets may be ``SecretStr`` or plain strings. Importing this module imports only pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr

from assistant.errors import ConfigError
from connectors.base import SettingsSection, secret_value, section_values

if TYPE_CHECKING:
    from connectors.slack.connector import SlackConnector


class SlackConnectorSettings(SettingsSection):
    enabled: bool = False
    source_name: str = "slack"
    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    channels: list[str] = Field(
        [], description="names, ids or glob patterns to include; empty = every channel the bot is a member of"
    )
    exclude_channels: list[str] = Field([], description="names, ids or glob patterns to skip")
    include_private: bool = Field(
        True, description="also private channels the bot was invited to (never DMs)"
    )
    days_back: int = Field(365, ge=1, description="history older than this is not indexed")
    include_files: bool = Field(True, description="files shared in messages become their own documents")
    include_bots: bool = Field(
        False, description="index messages of other bots and integrations (never the assistant's own)"
    )
    max_file_mb: float = Field(25.0, gt=0)
    page_size: int = Field(200, ge=1, le=999, description="messages per conversations.history/replies page")
    track_days: float = Field(
        7.0,
        ge=0,
        description="threads active within this window are re-checked on every incremental sync (new replies, edits, deletions)",
    )
    recheck_hours: float = Field(
        24.0,
        ge=0,
        description="threads with a reply this recent are re-fetched on every sync, which catches edited replies",
    )
    max_tracked_threads: int = Field(1000, ge=0, description="per channel; bounds the saved cursor")
    max_retries: int = Field(
        6, ge=0, le=20, description="retries of a rate-limited (429) call, honouring Retry-After"
    )
    timeout_s: float = Field(30.0, gt=0)
    sweep_hours: float = Field(
        24.0,
        ge=0,
        description="how often (per channel) the whole days_back history is re-listed to catch replies to threads quiet for longer than track_days; 0 = never (then only --full finds them)",
    )


_D = SlackConnectorSettings()  # the defaults, once: SlackConfig takes its own from the section


@dataclass(frozen=True)
class SlackConfig:
    """Everything the connector needs (plain values, checked); ``from_settings`` builds it from the
    section, whose defaults and help text it shares."""

    bot_token: str = field(repr=False)
    source_name: str = _D.source_name
    api_url: str = _D.api_url
    channels: tuple[str, ...] = tuple(_D.channels)  # names, ids or glob patterns; empty = every channel
    exclude_channels: tuple[str, ...] = tuple(_D.exclude_channels)
    include_private: bool = _D.include_private
    days_back: float = _D.days_back
    include_files: bool = _D.include_files
    include_bots: bool = _D.include_bots
    max_file_mb: float = _D.max_file_mb
    page_size: int = _D.page_size  # Slack recommends at most 200 per page
    track_days: float = _D.track_days
    recheck_hours: float = _D.recheck_hours
    max_tracked_threads: int = _D.max_tracked_threads
    sweep_hours: float = _D.sweep_hours
    max_retries: int = _D.max_retries
    timeout_s: float = _D.timeout_s

    def __post_init__(self) -> None:
        checks = [
            ("days_back", self.days_back > 0),
            ("page_size", 1 <= self.page_size <= 999),
            ("max_file_mb", self.max_file_mb > 0),
            ("track_days", self.track_days >= 0),
            ("recheck_hours", self.recheck_hours >= 0),
            ("max_tracked_threads", self.max_tracked_threads >= 0),
            ("sweep_hours", self.sweep_hours >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(
                    f"connectors.slack.{name} = {getattr(self, name)!r} is out of range; see "
                    "config/default.toml."
                )
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "exclude_channels", tuple(self.exclude_channels))


def config_from_settings(section) -> SlackConfig:
    """A ``SlackConfig`` from a settings section; attributes it lacks keep their defaults."""
    fields = section_values(section, SlackConfig, skip=("bot_token",))
    return SlackConfig(bot_token=secret_value(getattr(section, "bot_token", None)) or "", **fields)


def from_settings(section, **kw) -> SlackConnector:
    """The connector for ``[connectors.slack]``; ``kw`` goes to ``SlackConnector`` (client, clock)."""
    from connectors.slack.connector import SlackConnector

    return SlackConnector(config_from_settings(section), **kw)
