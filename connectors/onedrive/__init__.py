"""OneDrive / SharePoint connector: msal (app-only tokens) + Microsoft Graph v1.0 REST.

``from_settings(section)`` (``config``) turns the ``[connectors.onedrive]`` section into a
``OneDriveConnector``; ``OneDriveSettings`` is that section. Names are imported on first use, so
``assistant.settings`` can import ``connectors.onedrive.config`` without msal.
"""

from __future__ import annotations

from connectors.base import lazy_exports

_HOME = {
    "GRAPH_SCOPE": "auth",
    "GraphTokens": "auth",
    "GraphClient": "graph",
    "OneDriveConfig": "config",
    "OneDriveConnector": "connector",
    "OneDriveSettings": "config",
    "config_from_settings": "config",
    "from_settings": "config",
}
__all__ = sorted(_HOME)

__getattr__ = lazy_exports(__name__, _HOME)
