"""``[connectors.google_drive]``: the settings section and the step from settings to a connector.

``GoogleDriveSettings`` is the pydantic section ``assistant.settings`` composes (defaults, help text
and range checks live here, once). ``from_settings(section)`` builds a ``GoogleDriveConnector`` from it
(or from any object with those attributes: this package never imports ``assistant.settings``); the
credentials are read here, once, from ``credentials_json`` (a secret) or ``credentials_file``, and
never logged. Checks that need the whole picture ("selects nothing") run when the connector is
built (``DriveConfig``), so an unused connector's empty defaults are not an error.
Importing this module imports only pydantic (the Google client libraries load in ``from_settings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr

from assistant.errors import ConfigError
from connectors.base import SettingsSection, secret_value, section_values

if TYPE_CHECKING:
    from connectors.google_drive.connector import DriveConfig, GoogleDriveConnector


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


def config_from_settings(section) -> DriveConfig:
    """A ``DriveConfig`` from a settings section (credentials read and parsed)."""
    from connectors.google_drive.client import parse_credentials_json
    from connectors.google_drive.connector import DriveConfig

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
