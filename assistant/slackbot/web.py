"""The bot's one Slack Web API client factory (the bot, the report poster and the CLI use it).

``make_client(settings)`` builds a ``slack_sdk.WebClient`` for ``slack.bot_token`` at
``slack.api_url``; ``with_retries(client)`` adds the retry handlers to any client (tests pass their
own): 429 (``Retry-After``), connection errors (``connection_retries=False`` leaves them out, for a
poster that must never send a message twice), and read timeouts of read-only methods
(``auth.test``, ``users.*``, ``conversations.*``: a timed-out ``chat.postMessage`` may have posted,
so it is not repeated). ``who_am_i`` is ``auth.test`` with the two start-up failures a person can
fix said in one line each. Pagination is ``connectors.slack.client.pages``.
Not here: what the bot does with the client (``handlers``, ``report_posting``).
"""

from __future__ import annotations

from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from assistant.errors import ConfigError
from connectors.base import secret_value as secret
from connectors.slack.client import ReadTimeoutRetryHandler

READ_ONLY = (
    "auth.test",
    "users.",
    "conversations.info",
    "conversations.members",
    "conversations.history",
    "conversations.replies",
    "conversations.list",
    "team.info",
    "bots.info",
    "chat.getPermalink",
)


def make_client(settings, *, max_retries: int = 5, connection_retries: bool = True) -> WebClient:
    """A WebClient for the bot token, with ``with_retries``' handlers."""
    token = secret(settings.slack.bot_token)
    if not token:
        raise ConfigError(
            "No Slack bot token: set slack.bot_token (ASSISTANT_SLACK__BOT_TOKEN=xoxb-...) — "
            "see README 'Install in your Slack workspace'."
        )
    client = WebClient(token=token, base_url=settings.slack.api_url, timeout=30)
    return with_retries(client, max_retries=max_retries, connection_retries=connection_retries)


def with_retries(client: WebClient, *, max_retries: int = 5, connection_retries: bool = True) -> WebClient:
    """``client`` with the retry handlers it lacks (see the module docstring)."""
    kinds = {type(h) for h in client.retry_handlers}
    if RateLimitErrorRetryHandler not in kinds:
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=max_retries))
    if connection_retries and ConnectionErrorRetryHandler not in kinds:
        client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=2))
    if ReadTimeoutRetryHandler not in kinds:
        client.retry_handlers.append(ReadTimeoutRetryHandler(methods=READ_ONLY, max_retry_count=2))
    return client


def who_am_i(client: WebClient, *, api_url: str) -> dict:
    """``auth.test``, with the two start-up failures a person can fix said in one line each."""
    try:
        return client.auth_test().data  # type: ignore[return-value]
    except SlackApiError as e:
        code = e.response.get("error") if e.response is not None else "unknown"
        raise ConfigError(
            f"Slack refused the bot token ({code}): set slack.bot_token (ASSISTANT_SLACK__BOT_TOKEN) "
            "to the app's Bot User OAuth Token (xoxb-…, OAuth & Permissions page) and reinstall "
            "the app if it was revoked."
        ) from None
    except (OSError, URLError) as e:  # no network, DNS, refused, timed out after the retries
        reason = getattr(e, "reason", None) or e
        raise ConfigError(
            f"Could not reach Slack at {api_url} ({reason}): check the network or proxy, or slack.api_url."
        ) from None
