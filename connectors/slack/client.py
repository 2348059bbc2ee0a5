"""The Slack Web API as the connector needs it: one ``WebClient`` with retries, pagination and caches.

- Retries: ``RateLimitErrorRetryHandler`` (HTTP 429, honours ``Retry-After``), connection errors
  (reset, dropped) and 5xx with exponential backoff. What still fails after that is translated into
  ``assistant.errors``: ``invalid_auth`` → ``AuthError``, ``ratelimited`` → ``RateLimited``,
  ``invalid_cursor`` → ``CursorExpired``, ``*_not_found`` → ``NotFound``, ``not_in_channel`` /
  ``missing_scope`` → ``PermissionDenied``, anything else → ``ConnectorError``.
- Pagination: ``page`` (one page and the next cursor), ``iterate`` (every item), and ``pages``, the
  one cursor loop (the bot and the report poster use it with their own ``WebClient``).
- Caches: ``users.info`` per user id and ``auth.test``, for the life of the object (thread-safe).
- ``download`` fetches a file's ``url_private`` with the bearer token.

What it does not do: decide what to index (``connector``) or render messages (``convert``).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler

from assistant.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    CursorExpired,
    NotFound,
    PermissionDenied,
    RateLimited,
)

_AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "ekm_access_denied",
}
_NOT_FOUND = {
    "channel_not_found",
    "thread_not_found",
    "message_not_found",
    "file_not_found",
    "user_not_found",
    "file_deleted",
}
_DENIED = {"not_in_channel", "missing_scope", "access_denied", "restricted_action", "is_archived"}


class ServerErrorRetryHandler(RetryHandler):
    """Retries HTTP 500/502/503/504 with exponential backoff (slack-sdk's own covers only 500/503)."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class ReadTimeoutRetryHandler(RetryHandler):
    """Retries a read timeout (sent, no answer in ``timeout_s``): slack-sdk's connection handler does
    not cover ``TimeoutError``. ``methods``: retry only Web API methods starting with one of these
    (a timed-out ``chat.postMessage`` may have posted, so the bot lists its read-only methods);
    None retries every method (the connector only reads)."""

    def __init__(self, *, methods: tuple[str, ...] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.methods = methods

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if response is not None or not isinstance(error, TimeoutError):
            return False
        if self.methods is None:
            return True
        method = request.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        return method.startswith(self.methods)


def pages(call: Callable[..., Mapping], /, **params) -> Iterator[Mapping]:
    """Every response of a cursor-paginated Web API method: ``call(**params, cursor=...)`` until
    Slack returns no ``response_metadata.next_cursor``. ``call`` is a ``WebClient`` method
    (``client.conversations_members``) or anything that takes keyword arguments and returns a mapping.
    Stop early by leaving the loop: the next page is requested only when asked for."""
    cursor = None
    while True:
        resp = call(**params, **({"cursor": cursor} if cursor else {}))
        yield resp
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return


def translate(e: SlackApiError, what: str) -> Exception:
    """A ``SlackApiError`` as one of ours, with a message that says what to do."""
    resp = e.response
    status = getattr(resp, "status_code", 200)
    data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
    code = data.get("error") or f"HTTP {status}"
    if code == "ratelimited" or status == 429:
        after = (resp.headers or {}).get("Retry-After") or (resp.headers or {}).get("retry-after")
        try:
            retry_after = float(after[0] if isinstance(after, list) else after) if after else None
        except ValueError:
            retry_after = None
        return RateLimited(
            f"Slack kept rate-limiting {what} after all retries. Run the sync again later; "
            "it resumes where it stopped.",
            retry_after=retry_after,
        )
    if code in _AUTH_ERRORS:
        return AuthError(
            f"Slack rejected the bot token ({code}) on {what}. Check connectors.slack.bot_token "
            "(an xoxb- token of an installed app)."
        )
    if code == "invalid_cursor":
        return CursorExpired(f"Slack no longer accepts the saved page cursor for {what}; re-enumerating.")
    if code in _NOT_FOUND:
        return NotFound(f"{what}: {code}")
    if code in _DENIED:
        needed = data.get("needed")
        hint = (
            f" Add the scope {needed} to the Slack app and reinstall it."
            if needed
            else (" Invite the bot to the channel (/invite @assistant)." if code == "not_in_channel" else "")
        )
        return PermissionDenied(f"{what}: {code}.{hint}")
    return ConnectorError(f"Slack {what} failed: {code}. If this persists, check Slack's status page.")


class SlackClient:
    """One bot token against one Slack API base URL."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 30.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        web_client: WebClient | None = None,
    ) -> None:
        if not token:
            raise ConfigError(
                "No Slack bot token. Set connectors.slack.bot_token (xoxb-...) in your config or "
                "ASSISTANT_CONNECTORS__SLACK__BOT_TOKEN."
            )
        self.token = token
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_s)
        self.web = web_client or WebClient(
            token=token,
            base_url=base_url,
            timeout=timeout_s,  # type: ignore[arg-type]  (urllib takes a float)
            retry_handlers=[
                RateLimitErrorRetryHandler(max_retry_count=max_retries),
                ConnectionErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
                ReadTimeoutRetryHandler(max_retry_count=2, interval_calculator=backoff),
                ServerErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
            ],
        )
        self._users: dict[str, dict | None] = {}
        self._auth: dict | None = None
        self._lock = threading.Lock()
        self.calls = 0  # API calls made (for benchmarks)

    # ---- calls ----------------------------------------------------------------------------------
    def call(self, method: str, **params) -> dict:
        """One Web API call; raises ``assistant.errors`` on failure."""
        with self._lock:
            self.calls += 1
        try:
            resp = self.web.api_call(
                method, http_verb="POST", params={k: v for k, v in params.items() if v is not None}
            )
        except SlackApiError as e:
            raise translate(e, method) from None
        except (OSError, ValueError) as e:  # connection refused/reset after retries, bad JSON
            raise ConnectorError(
                f"Slack {method} failed: {e}. Check connectors.slack.api_url and the network."
            ) from None
        return resp.data if isinstance(resp.data, dict) else {}

    def page(self, method: str, key: str, *, cursor: str | None = None, **params) -> tuple[list, str | None]:
        """One page of a cursor-paginated method: (items, next cursor or None)."""
        data = self.call(method, cursor=cursor or None, **params)
        nxt = (data.get("response_metadata") or {}).get("next_cursor") or None
        return list(data.get(key) or []), nxt

    def iterate(self, method: str, key: str, **params) -> Iterator[dict]:
        """Every item under ``key`` of every page (``pages`` over ``call``)."""
        for data in pages(lambda **kw: self.call(method, **kw), **params):
            yield from data.get(key) or []

    # ---- cached lookups -------------------------------------------------------------------------
    def auth(self) -> dict:
        if self._auth is None:
            self._auth = self.call("auth.test")
        return self._auth

    def user(self, user_id: str) -> dict | None:
        """``users.info`` (cached; None for an unknown user)."""
        if not user_id:
            return None
        if user_id not in self._users:
            try:
                u = self.call("users.info", user=user_id).get("user")
            except NotFound:
                u = None
            self._users[user_id] = u
        return self._users[user_id]

    def user_name(self, user_id: str) -> str:
        u = self.user(user_id)
        if not u:
            return user_id or "unknown"
        p = u.get("profile") or {}
        return p.get("display_name") or p.get("real_name") or u.get("real_name") or u.get("name") or user_id

    def user_email(self, user_id: str) -> str | None:
        u = self.user(user_id)
        if not u or u.get("deleted") or u.get("is_bot"):
            return None
        return (u.get("profile") or {}).get("email") or None

    def members(self, channel: str, *, page_size: int = 200) -> list[str]:
        return list(self.iterate("conversations.members", "members", channel=channel, limit=page_size))

    # ---- files ----------------------------------------------------------------------------------
    def download(self, url: str, *, max_bytes: int, expect_mime: str = "") -> bytes:
        """GET a ``url_private`` with the bearer token, retrying 429/5xx; at most ``max_bytes``."""
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    ctype = resp.headers.get_content_type()
                    data = resp.read(max_bytes + 1)
                break
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    raise NotFound(f"file download {url}: 404") from None
                if e.code in (401, 403):
                    raise AuthError(
                        f"Slack refused the file download ({e.code}); the app needs the files:read scope."
                    ) from None
                if e.code not in (429, 500, 502, 503, 504) or attempt == self.max_retries:
                    raise ConnectorError(
                        f"file download failed with HTTP {e.code}; retried next run."
                    ) from None
                wait = e.headers.get("Retry-After") if e.code == 429 else None
                time.sleep(float(wait) if wait and wait.isdigit() else self.backoff_s * 2**attempt)
            except ValueError as e:  # a malformed URL: retrying will not help
                raise ConnectorError(f"file download failed: {e}.") from None
            except OSError as e:
                if attempt == self.max_retries:
                    raise ConnectorError(f"file download failed: {e}; retried next run.") from None
                time.sleep(self.backoff_s * 2**attempt)
        if ctype == "text/html" and "html" not in expect_mime:
            # Slack answers an unauthorised file request with its sign-in page, not an error status.
            raise AuthError(
                "Slack returned its sign-in page instead of the file: the bot token lacks the "
                "files:read scope or the file is not shared with the bot."
            )
        if len(data) > max_bytes:
            raise ConnectorError(
                f"file is larger than connectors.slack.max_file_mb ({max_bytes / 1e6:.0f} MB); skipped."
            )
        return data
