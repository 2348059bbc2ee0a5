"""Google Drive connector (Drive v3 through google-api-python-client).

``from_settings(section)`` (``config``) turns the ``[connectors.google_drive]`` section into a
``GoogleDriveConnector``; ``GoogleDriveSettings`` is that section. Names are imported on first use,
so ``assistant.settings`` can import ``connectors.google_drive.config`` without the Google libraries.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
