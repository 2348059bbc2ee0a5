"""One exception hierarchy for the whole project.

Every message says what went wrong *and what to do about it*; the CLI prints
``str(error)`` and exits non-zero, so a message is the user's only guide.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base class of every error the assistant raises on purpose."""


class ConfigError(AssistantError):
    """A setting is missing or has a bad value."""


class ParseError(AssistantError):
    """A file could not be turned into text (corrupt, encrypted, unsupported)."""


class EmptyDocument(ParseError):
    """The file parsed fine but holds no text (empty, or only images): indexed with no chunks."""


class UnsupportedFormat(ParseError):
    """The file's type is not one we can parse."""


class ConnectorError(AssistantError):
    """An external system failed in a way that retrying will not fix."""


class AuthError(ConnectorError):
    """Credentials were rejected or are missing."""


class NotFound(ConnectorError):
    """The item no longer exists at the source (treat as deleted)."""


class PermissionDenied(ConnectorError):
    """The connector's identity may not read this item."""


class RateLimited(ConnectorError):
    """The source kept throttling us after all retries."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CursorExpired(ConnectorError):
    """A saved sync cursor is no longer valid; the connector must re-enumerate."""


class StoreError(AssistantError):
    """The local store or index is unusable."""


class ModelError(AssistantError):
    """A model could not be loaded or run."""


class InputError(AssistantError):
    """A command's argument is invalid (an empty question, an unknown mode, a malformed email)."""
