"""OneDrive / SharePoint connector: msal (app-only tokens) + Microsoft Graph v1.0 REST.

``from_settings(section)`` adapts the ``[connectors.onedrive]`` settings section (duck-typed: any
object with those attributes; ``SecretStr`` values are unwrapped) into a connector, so this package
never imports ``assistant.settings``.
"""

from __future__ import annotations

from typing import Any

from .auth import GRAPH_SCOPE, GraphTokens
from .connector import OneDriveConfig, OneDriveConnector
from .graph import GraphClient

__all__ = [
    "GraphClient",
    "GraphTokens",
    "OneDriveConfig",
    "OneDriveConnector",
    "config_from_settings",
    "from_settings",
]


def _plain(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def config_from_settings(section: Any, **overrides: Any) -> OneDriveConfig:
    """Settings section → ``OneDriveConfig``; ``overrides`` win (e.g. ``token_cache_file``)."""
    get = lambda name, default=None: _plain(getattr(section, name, default))
    path = lambda v: str(v) if v is not None else None
    values: dict[str, Any] = {
        "tenant_id": get("tenant_id") or "",
        "client_id": get("client_id") or "",
        "client_secret": get("client_secret"),
        "certificate_file": path(get("certificate_file")),
        "certificate_thumbprint": get("certificate_thumbprint"),
        "authority_host": get("authority_host", "https://login.microsoftonline.com"),
        "graph_url": get("graph_url", "https://graph.microsoft.com/v1.0"),
        "scope": get("scope", GRAPH_SCOPE),
        "verify": get("verify", True),
        "tenant_domain": get("tenant_domain"),
        "user_drives": tuple(get("user_drives", ()) or ()),
        "site_ids": tuple(get("site_ids", ()) or ()),
        "site_urls": tuple(get("site_urls", ()) or ()),
        "drive_ids": tuple(get("drive_ids", ()) or ()),
        "folder_paths": tuple(get("folder_paths", ()) or ()),
        "max_file_mb": float(get("max_file_mb", 25.0)),
        "workers": int(get("workers", 8)),
        "max_retries": int(get("max_retries", 6)),
        "timeout_s": float(get("timeout_s", 60.0)),
        "token_cache_file": path(get("token_cache_file")),
        "source_name": get("source_name", "onedrive"),
    }
    values.update(overrides)
    return OneDriveConfig(**values)


def from_settings(section: Any, **overrides: Any) -> OneDriveConnector:
    """Build the connector from the ``[connectors.onedrive]`` section (see ``config/default.toml``)."""
    return OneDriveConnector(config_from_settings(section, **overrides))
