"""Google Drive connector (Drive v3 through google-api-python-client).

``from_settings(section)`` adapts any object with the attribute names of
``[connectors.google_drive]`` (duck typing: this package never imports ``assistant.settings``)
into a ``GoogleDriveConnector``. The credentials are read here, once, from ``credentials_json``
(a secret) or ``credentials_file``; they are never logged.
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import ConfigError
from connectors.google_drive.client import (
    SCOPES,
    DriveClient,
    RetryPolicy,
    load_credentials,
    parse_credentials_json,
)
from connectors.google_drive.connector import DriveConfig, GoogleDriveConnector

__all__ = [
    "SCOPES",
    "DriveClient",
    "DriveConfig",
    "GoogleDriveConnector",
    "RetryPolicy",
    "config_from_settings",
    "from_settings",
    "load_credentials",
]


def _secret(value) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def config_from_settings(section) -> DriveConfig:
    text = _secret(getattr(section, "credentials_json", None))
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
    names = (
        "source_name",
        "subject",
        "api_endpoint",
        "token_uri",
        "my_drive",
        "all_shared_drives",
        "shared_drive_ids",
        "folder_ids",
        "include_mime_types",
        "exclude_mime_types",
        "max_file_mb",
        "page_size",
        "workers",
        "max_retries",
    )
    kw = {n: getattr(section, n) for n in names if hasattr(section, n)}
    return DriveConfig(credentials_info=parse_credentials_json(text), **kw)


def from_settings(section) -> GoogleDriveConnector:
    """The connector for a ``[connectors.google_drive]`` section (the registry calls this)."""
    return GoogleDriveConnector(config_from_settings(section))
