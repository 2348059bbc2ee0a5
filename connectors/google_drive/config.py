"""``[connectors.google_drive]``: the settings section and the step from settings to a connector.

``GoogleDriveSettings`` is the pydantic section ``assistant.settings`` composes (defaults, help text
and range checks live here, once); ``DriveConfig`` is what the connector runs with (plain values, the
same defaults, parsed credentials). ``from_settings(section)`` builds a ``GoogleDriveConnector`` from it
(or from any object with those attributes: this package never imports ``assistant.settings``); the
credentials are read here, once, from ``credentials_json`` (a secret) or ``credentials_file``, and
never logged. Checks that need the whole picture ("selects nothing") run when the connector is
built (``DriveConfig``), so an unused connector's empty defaults are not an error.
Importing this module imports only pydantic (the Google client libraries load in ``from_settings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from assistant.errors import ConfigError
from connectors.base import SettingsSection, secret_value, section_values

if TYPE_CHECKING:
    from connectors.google_drive.connector import GoogleDriveConnector


class GoogleDriveSettings(SettingsSection):
    enabled: bool = False
    source_name: str = "gdrive"
    credentials_file: Path | None = Field(
        None, description="service-account JSON key or authorized-user JSON (refresh token)"
    )
    credentials_json: SecretStr | None = Field(
        None, description="the same JSON inline (e.g. from a secret store)"
    )
    subject: str | None = Field(None, description="user to impersonate with domain-wide delegation")
    api_endpoint: str = "https://www.googleapis.com"
    token_uri: str | None = Field(None, description="override the OAuth token endpoint")
    my_drive: bool = True
    all_shared_drives: bool = False
    shared_drive_ids: list[str] = []
    folder_ids: list[str] = []
    include_mime_types: list[str] = []
    exclude_mime_types: list[str] = []
    max_file_mb: float = Field(25.0, gt=0)
    page_size: int = Field(1000, ge=1, le=1000)
    workers: int = Field(8, ge=1, le=64)
    max_retries: int = Field(6, ge=0, le=20)


_D = GoogleDriveSettings()  # the defaults, once: DriveConfig takes its own from the section


@dataclass(frozen=True)
class DriveConfig:
    """What to index and how to reach it. ``credentials_info`` is the parsed key/authorized-user JSON."""

    credentials_info: Mapping[str, Any] = field(repr=False, default_factory=dict)
    source_name: str = _D.source_name
    subject: str | None = _D.subject  # user to impersonate (domain-wide delegation)
    api_endpoint: str = _D.api_endpoint
    token_uri: str | None = _D.token_uri
    my_drive: bool = _D.my_drive
    all_shared_drives: bool = _D.all_shared_drives
    shared_drive_ids: tuple[str, ...] = tuple(_D.shared_drive_ids)
    folder_ids: tuple[str, ...] = tuple(
        _D.folder_ids
    )  # when set, only these subtrees (in any drive) are indexed
    include_mime_types: tuple[str, ...] = tuple(_D.include_mime_types)
    exclude_mime_types: tuple[str, ...] = tuple(_D.exclude_mime_types)
    max_file_mb: float = _D.max_file_mb
    page_size: int = _D.page_size
    workers: int = _D.workers  # concurrent API calls at most (sync's fetch pool may be larger)
    max_retries: int = _D.max_retries
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("shared_drive_ids", "folder_ids", "include_mime_types", "exclude_mime_types"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        if not 1 <= self.page_size <= 1000:
            raise ConfigError(
                f"[connectors.google_drive] page_size = {self.page_size}: Drive allows 1 to 1000."
            )
        if self.workers < 1 or self.max_retries < 0 or self.max_file_mb <= 0:
            raise ConfigError(
                "[connectors.google_drive] workers must be >= 1, max_retries >= 0 and max_file_mb > 0; "
                f"got {self.workers}, {self.max_retries}, {self.max_file_mb}."
            )
        if not (self.my_drive or self.all_shared_drives or self.shared_drive_ids or self.folder_ids):
            raise ConfigError(
                "[connectors.google_drive] selects nothing: set my_drive = true, all_shared_drives = true, "
                "shared_drive_ids or folder_ids."
            )


def config_from_settings(section) -> DriveConfig:
    """A ``DriveConfig`` from a settings section (credentials read and parsed)."""
    from connectors.google_drive.client import parse_credentials_json

    text = secret_value(getattr(section, "credentials_json", None))
    path = getattr(section, "credentials_file", None)
    if not text and path:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as e:
            raise ConfigError(
                f"[connectors.google_drive] credentials_file = {str(path)!r} cannot be read ({e.strerror}). "
                "Point it at the service-account key or authorized-user JSON you downloaded."
            ) from None
    if not text:
        raise ConfigError(
            "[connectors.google_drive] has no credentials: set credentials_file to a service-account key "
            "(or authorized-user JSON), or credentials_json / ASSISTANT_CONNECTORS__GOOGLE_DRIVE__CREDENTIALS_JSON."
        )
    kw = section_values(section, DriveConfig, skip=("credentials_info",))
    return DriveConfig(credentials_info=parse_credentials_json(text), **kw)


def from_settings(section) -> GoogleDriveConnector:
    """The connector for a ``[connectors.google_drive]`` section (the registry calls this)."""
    from connectors.google_drive.connector import GoogleDriveConnector

    return GoogleDriveConnector(config_from_settings(section))
