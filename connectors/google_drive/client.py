"""Drive v3 access: credentials, one API client per thread, and retries.

Does: turn a service-account key (optionally impersonating a user through domain-wide delegation)
or an authorized-user JSON (refresh token) into credentials; build google-api-python-client's
Drive service from the discovery document shipped in the wheel (no discovery call) against a
configurable endpoint; execute requests with bounded, truncated exponential backoff with full
jitter on rate limits (403 userRateLimitExceeded/rateLimitExceeded, 429 honouring Retry-After),
5xx and dropped connections; translate the rest into ``assistant.errors``.
Does not: decide what to list, filter or convert (connector.py, convert.py).

``execute()`` of the client library retries nothing by default, and its own ``num_retries``
ignores Retry-After, so the loop lives here. httplib2 connections are not thread-safe, hence a
small pool of service objects, one per concurrent call (sync fetches items from a thread pool);
credentials are shared and refreshed once for all.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from assistant.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    CursorExpired,
    NotFound,
    PermissionDenied,
    RateLimited,
)

log = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.metadata.readonly",
)
_RATE_REASONS = {
    "userRateLimitExceeded",
    "rateLimitExceeded",
    "dailyLimitExceeded",
    "sharingRateLimitExceeded",
}
_DENIED_REASONS = {
    "insufficientFilePermissions",
    "forbidden",
    "domainPolicy",
    "appNotAuthorizedToFile",
    "cannotDownloadAbusiveFile",
}


def load_credentials(
    info: Mapping[str, Any],
    *,
    subject: str | None = None,
    token_uri: str | None = None,
    scopes: tuple[str, ...] = SCOPES,
):
    """Credentials from a service-account key or an authorized-user JSON (already parsed)."""
    info = dict(info)
    if token_uri:
        info["token_uri"] = token_uri
    kind = info.get("type")
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(
                info, scopes=list(scopes), subject=subject
            )
        if kind == "authorized_user":
            if subject:
                raise ConfigError(
                    "[connectors.google_drive] subject only works with a service-account key (domain-wide "
                    "delegation); remove it or use a service-account key."
                )
            creds = user_credentials.Credentials.from_authorized_user_info(info, scopes=list(scopes))
            # google-auth ignores a token_uri inside the file (on purpose); only an explicit setting moves it
            return creds.with_token_uri(token_uri) if token_uri else creds
    except (ValueError, KeyError) as e:
        raise ConfigError(
            f"The Google Drive credentials JSON is incomplete ({e}). Download a fresh key from the "
            "Google Cloud console (IAM > Service accounts > Keys) or re-run the OAuth consent."
        ) from None
    raise ConfigError(
        f"The Google Drive credentials JSON has type {kind!r}; expected 'service_account' or "
        "'authorized_user'. Point credentials_file at a service-account key or an authorized-user JSON."
    )


def parse_credentials_json(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(
            f"The Google Drive credentials are not valid JSON ({e.msg} at line {e.lineno}). "
            "Check credentials_file / credentials_json."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "The Google Drive credentials JSON must be an object (a service-account key or authorized-user file)."
        )
    return data


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: full-jitter exponential backoff, capped; a server's Retry-After wins."""

    max_retries: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    max_retry_after_s: float = 300.0

    def delay(
        self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return rand() * min(self.cap_s, self.base_s * (2**attempt))


def api_base(endpoint: str) -> str:
    """``https://www.googleapis.com`` -> ``https://www.googleapis.com/drive/v3/`` (what the client library wants)."""
    base = endpoint.rstrip("/")
    return base + "/" if base.endswith("/drive/v3") else base + "/drive/v3/"


def _error_info(e: HttpError) -> tuple[str, str, str]:
    """(reason, location, message) from Google's JSON error body; empty strings when absent."""
    try:
        err = json.loads(e.content.decode("utf-8"))["error"]
        first = (err.get("errors") or [{}])[0]
        return first.get("reason", ""), first.get("location", ""), err.get("message", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "", ""


class DriveClient:
    """Executes Drive requests with retries; ``call(lambda s: s.files().list(...))``."""

    def __init__(
        self,
        credentials,
        *,
        api_endpoint: str = "https://www.googleapis.com",
        retry: RetryPolicy = RetryPolicy(),
        timeout_s: float = 60.0,
        max_concurrency: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.base = api_base(api_endpoint)
        self.retry, self.timeout_s, self.sleep = retry, timeout_s, sleep
        self._idle: list = []
        self._pool_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._gate = threading.BoundedSemaphore(max_concurrency)
        self.retries = 0  # how many times a request was retried (for reports and tests)

    def _take_service(self):
        """An idle service object, or a new one: each is used by one thread at a time (httplib2 is not
        thread-safe), and kept for reuse, because sync runs a fresh thread pool for every page."""
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        http = google_auth_httplib2.AuthorizedHttp(
            self.credentials, http=httplib2.Http(timeout=self.timeout_s)
        )
        return build(
            "drive",
            "v3",
            http=http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": self.base},
        )

    def _give_back(self, svc) -> None:
        with self._pool_lock:
            self._idle.append(svc)

    def _ensure_token(self) -> None:
        """Refresh once for all threads, instead of every worker racing to the token endpoint."""
        if self.credentials.valid:
            return
        with self._refresh_lock:
            if not self.credentials.valid:
                self.credentials.refresh(google_auth_httplib2.Request(httplib2.Http(timeout=self.timeout_s)))

    def call(self, make: Callable[[Any], Any], *, what: str = "Drive request"):
        """Build a request from this thread's service and execute it, retrying what is worth retrying."""
        attempt = 0
        while True:
            retry_after: float | None = None
            throttled = False
            svc = None
            try:
                with self._gate:
                    self._ensure_token()
                    svc = self._take_service()
                    result = make(svc).execute(num_retries=0)
                self._give_back(svc)
                return result
            except HttpError as e:
                self._give_back(svc)
                status = e.resp.status
                reason, location, message = _error_info(e)
                if not (status == 429 or status >= 500 or (status == 403 and reason in _RATE_REASONS)):
                    raise self._translate(status, reason, location, message, what) from None
                ra = e.resp.get("retry-after")
                retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
                problem = f"HTTP {status} {reason}".strip()
                throttled = status in (403, 429)
            except RefreshError as e:
                raise AuthError(
                    f"Google rejected the Drive credentials ({e}). Check the key file, that the service "
                    "account has domain-wide delegation for the scopes drive.readonly and "
                    "drive.metadata.readonly when a subject is set, and that the subject exists."
                ) from None
            except (TransportError, httplib2.HttpLib2Error, ConnectionError, TimeoutError) as e:
                svc = None  # the connection may be half-closed: this service object is dropped
                problem = f"{type(e).__name__}: {e}"
            if attempt >= self.retry.max_retries:
                if throttled:
                    raise RateLimited(
                        f"{what}: Google Drive kept throttling after {attempt} retries ({problem}). "
                        "Lower [connectors.google_drive] workers or raise the Drive API quota.",
                        retry_after=retry_after,
                    )
                raise ConnectorError(
                    f"{what}: failed after {attempt} retries ({problem}). Check connectivity to "
                    f"{self.base} and Google's status page, then run the sync again."
                )
            delay = self.retry.delay(attempt, retry_after)
            log.info("%s: %s; retry %d in %.2f s", what, problem, attempt + 1, delay)
            self.retries += 1
            attempt += 1
            self.sleep(delay)

    @staticmethod
    def _translate(status: int, reason: str, location: str, message: str, what: str) -> Exception:
        detail = f"{what}: HTTP {status} {reason} {message}".strip()
        if status == 400 and location == "pageToken":
            return CursorExpired(
                f"{detail}. The saved Drive page token is no longer valid; a full listing will run."
            )
        if status == 404:
            return NotFound(
                f"{detail}. The item was deleted or is no longer shared with the indexing account."
            )
        if status == 401:
            return AuthError(f"{detail}. The Drive credentials were rejected; check the key and its scopes.")
        if reason == "exportSizeLimitExceeded":
            return ConnectorError(
                f"{detail}. Drive exports at most 10 MB; split the document or exclude it "
                "(exclude_mime_types or move it out of the indexed folders)."
            )
        if status == 403 and (reason in _DENIED_REASONS or reason.startswith("insufficient")):
            return PermissionDenied(
                f"{detail}. The indexing account may not read this item; share it with the account "
                "or exclude it."
            )
        return ConnectorError(
            f"{detail}. This looks like a bug or an unsupported request; report it with this message."
        )

    # -- the few calls the connector needs ------------------------------------------------------
    def start_page_token(self) -> str:
        return self.call(
            lambda s: s.changes().getStartPageToken(supportsAllDrives=True), what="changes.getStartPageToken"
        )["startPageToken"]

    def list_files(self, **params) -> dict:
        return self.call(lambda s: s.files().list(**params), what="files.list")

    def list_changes(self, token: str, **params) -> dict:
        return self.call(lambda s: s.changes().list(pageToken=token, **params), what="changes.list")

    def get_file(self, file_id: str, *, fields: str) -> dict:
        return self.call(
            lambda s: s.files().get(fileId=file_id, fields=fields, supportsAllDrives=True),
            what=f"files.get {file_id}",
        )

    def download(self, file_id: str) -> bytes:
        return self.call(
            lambda s: s.files().get_media(fileId=file_id, supportsAllDrives=True), what=f"download {file_id}"
        )

    def export(self, file_id: str, mime: str) -> bytes:
        return self.call(
            lambda s: s.files().export_media(fileId=file_id, mimeType=mime),
            what=f"export {file_id} as {mime}",
        )

    def permissions(self, file_id: str, *, fields: str) -> Iterator[dict]:
        token = None
        while True:
            kw = {"pageToken": token} if token else {}
            page = self.call(
                lambda s, kw=kw: s.permissions().list(
                    fileId=file_id,
                    supportsAllDrives=True,
                    pageSize=100,
                    fields=f"nextPageToken,permissions({fields})",
                    **kw,
                ),
                what=f"permissions.list {file_id}",
            )
            yield from page.get("permissions", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def drives(self) -> Iterator[dict]:
        token = None
        while True:
            kw = {"pageToken": token} if token else {}
            page = self.call(
                lambda s, kw=kw: s.drives().list(pageSize=100, fields="nextPageToken,drives(id,name)", **kw),
                what="drives.list",
            )
            yield from page.get("drives", [])
            token = page.get("nextPageToken")
            if not token:
                return
