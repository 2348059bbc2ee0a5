"""Google Drive connector (Drive v3 through google-api-python-client).

``from_settings(section)`` (``config``) turns the ``[connectors.google_drive]`` section into a
``GoogleDriveConnector``; ``GoogleDriveSettings`` is that section. Names are imported on first use,
so ``assistant.settings`` can import ``connectors.google_drive.config`` without the Google libraries.
"""

from __future__ import annotations

from connectors.base import lazy_exports

_HOME = {
    "SCOPES": "client",
    "DriveClient": "client",
    "RetryPolicy": "client",
    "load_credentials": "client",
    "DriveConfig": "config",
    "GoogleDriveConnector": "connector",
    "GoogleDriveSettings": "config",
    "config_from_settings": "config",
    "from_settings": "config",
}
__all__ = sorted(_HOME)

__getattr__ = lazy_exports(__name__, _HOME)
