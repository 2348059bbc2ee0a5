"""A small Microsoft Graph REST client: JSON GETs, @odata.nextLink paging, throttling, downloads.

- Throttling: 429 and 503 are retried after ``Retry-After`` (seconds or an HTTP date) when the
  server sends it (a wait over ``max_wait_s`` ends in ``RateLimited`` rather than a stalled worker); other transient failures (500/502/504, connection errors, timeouts) are retried
  with exponential backoff and full jitter. Retries are bounded by ``max_retries``; a source that
  keeps throttling ends in ``RateLimited``.
- 401 drops the cached app token and tries once more with a fresh one.
- Errors map onto ``assistant.errors``: 401 → AuthError, 403 → PermissionDenied, 404 → NotFound,
  410 → CursorExpired (Graph's ``resyncRequired`` for expired delta links), else ConnectorError,
  each with Graph's own error code and message.
- Downloads: ``/content`` answers 302 to a pre-authenticated URL on another host. The redirect is
  followed by hand with a session that never carries the bearer token, so the token cannot leak to
  the download host.

What it does not do: build Graph URLs for drives and items, or interpret items (``connector``).
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from assistant.errors import AuthError, ConnectorError, CursorExpired, NotFound, PermissionDenied, RateLimited

from .auth import VerifyingSession

_RETRY_STATUS = {429, 500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _graph_error(resp: requests.Response) -> str:
    try:
        err = resp.json().get("error", {})
        code, msg = err.get("code", ""), err.get("message", "")
    except ValueError:
        code, msg = "", resp.text[:200]
    return f"HTTP {resp.status_code} {code}: {msg}".strip()


class GraphClient:
    """Thread-safe: one pooled session shared by the connector's fetch workers."""

    def __init__(
        self,
        base_url: str,
        tokens: Callable[[], str],
        *,
        verify: bool | str = True,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        max_wait_s: float = 300.0,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._tokens = tokens
        self._timeout = timeout
        self.max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_wait_s = max_wait_s  # a longer Retry-After ends the retries (RateLimited)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._api = VerifyingSession(verify=verify, timeout=timeout)
        self._download = VerifyingSession(verify=verify, timeout=timeout)  # never carries the token
        for s in (self._api, self._download):
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        self._lock = threading.Lock()
        self.requests_sent = 0  # every HTTP request, retries and downloads included
        self.waited_s = 0.0  # total time slept because of throttling/backoff

    # -- plumbing ---------------------------------------------------------------------------
    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base_url, path_or_url.lstrip("/"))

    def _count(self) -> None:
        with self._lock:
            self.requests_sent += 1

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = retry_after
        else:  # full jitter: uniform in [0, base * 2^attempt], capped
            delay = self._rng.uniform(0, min(self._max_backoff_s, self._backoff_s * (2**attempt)))
        with self._lock:
            self.waited_s += delay
        self._sleep(delay)

    def _send(
        self,
        session: requests.Session,
        url: str,
        *,
        authorized: bool,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        allow_redirects: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """One logical GET with retries; returns the final response (any non-retryable status)."""
        refreshed = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            if authorized:
                hdrs["Authorization"] = f"Bearer {self._tokens()}"
            self._count()
            try:
                resp = session.get(
                    url, params=params, headers=hdrs, allow_redirects=allow_redirects, stream=stream
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt >= self.max_retries:
                    raise ConnectorError(
                        f"Graph request {url} failed after {attempt + 1} attempts: {e}. "
                        "Check network access to connectors.onedrive.graph_url."
                    ) from None
                self._wait(attempt, None)
                attempt += 1
                continue
            if (
                resp.status_code == 401
                and authorized
                and not refreshed
                and hasattr(self._tokens, "invalidate")
            ):
                resp.close()
                self._tokens.invalidate()  # type: ignore[attr-defined]
                refreshed = True
                continue
            if resp.status_code in _RETRY_STATUS:
                if attempt >= self.max_retries:
                    return resp
                wait = (
                    retry_after_seconds(resp.headers.get("Retry-After"))
                    if resp.status_code in (429, 503)
                    else None
                )
                if wait is not None and wait > self._max_wait_s:  # hours-long: give the item back to sync
                    return resp
                resp.close()
                self._wait(attempt, wait)
                attempt += 1
                continue
            return resp

    @staticmethod
    def _raise_for(resp: requests.Response, what: str) -> None:
        if resp.status_code < 400:
            return
        detail = _graph_error(resp)
        if resp.status_code == 401:
            raise AuthError(
                f"Graph rejected the app token for {what} ({detail}). Grant the app registration "
                "the Files.Read.All (or Sites.Selected) application permission and admin consent."
            )
        if resp.status_code == 403:
            raise PermissionDenied(
                f"Graph denied access to {what} ({detail}). With Sites.Selected, grant the "
                "app read access to this site; otherwise check admin consent."
            )
        if resp.status_code == 404:
            raise NotFound(f"{what} does not exist in Graph ({detail}).")
        if resp.status_code == 410:
            raise CursorExpired(
                f"Graph says the delta link for {what} expired ({detail}); a full re-enumeration follows."
            )
        if resp.status_code == 429:
            raise RateLimited(
                f"Graph kept throttling {what} ({detail}); retry later or lower connectors.onedrive.workers.",
                retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
            )
        raise ConnectorError(f"Graph request for {what} failed ({detail}); it is retried next run.")

    # -- API --------------------------------------------------------------------------------
    def get(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict:
        url = self.url(path_or_url)
        resp = self._send(self._api, url, authorized=True, params=params, headers=headers)
        self._raise_for(resp, url)
        try:
            return resp.json()
        except ValueError:
            raise ConnectorError(
                f"Graph answered {url} with something that is not JSON; check connectors.onedrive.graph_url."
            ) from None

    def pages(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[dict]:
        """Yield each page of a collection, following ``@odata.nextLink`` (which carries the query)."""
        page = self.get(path_or_url, params=params, headers=headers)
        yield page
        while page.get("@odata.nextLink"):
            page = self.get(page["@odata.nextLink"], headers=headers)
            yield page

    def values(self, path_or_url: str, *, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        for page in self.pages(path_or_url, params=params):
            yield from page.get("value", [])

    def download(self, path_or_url: str, *, max_bytes: int | None = None) -> bytes:
        """GET content; a redirect is followed WITHOUT the Authorization header (pre-authenticated URL)."""
        url = self.url(path_or_url)
        resp = self._send(self._api, url, authorized=True, allow_redirects=False, stream=True)
        if resp.status_code in _REDIRECTS:
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise ConnectorError(f"Graph redirected {url} without a Location; retried next run.")
            resp = self._send(self._download, urljoin(url, location), authorized=False, stream=True)
        self._raise_for(resp, url)
        chunks, total = [], 0
        try:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise ConnectorError(
                        f"{url} is larger than {max_bytes} bytes; raise "
                        "connectors.onedrive.max_file_mb to index it."
                    )
                chunks.append(chunk)
        except requests.RequestException as e:
            raise ConnectorError(f"Download of {url} broke off: {e}; it is retried next run.") from None
        finally:
            resp.close()
        return b"".join(chunks)

    def close(self) -> None:
        self._api.close()
        self._download.close()
