"""Posting scheduled reports to Slack through the Web API (``slack_sdk.WebClient``).

``SlackPoster`` is the scheduler's ``Poster`` (``assistant.reports.Poster``): it resolves '#name' to a
channel id (conversations.list), computes who reads a channel (``identity.channel_audience``),
renders a report (``report_blocks``) and posts it with its run key in the message metadata and
footer (chat.postMessage, links not unfurled), and finds an earlier post of a run key in the
channel history (conversations.history with ``include_all_metadata``) so a retried run never posts twice.

Retries (``web.make_client(connection_retries=False)``): 429 responses (Slack did not process the
call) and read timeouts of read-only calls; connection errors are NOT retried by the client — the
scheduler retries later, after searching the history.
Not done: threads, ephemeral delivery, Enterprise Grid org-wide channels.
"""

from __future__ import annotations

import json
import re

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from assistant.errors import AuthError, ConfigError, ConnectorError
from assistant.reports import Report
from assistant.retrieval import Audience
from assistant.slackbot.identity import channel_audience
from assistant.slackbot.report_blocks import report_blocks
from assistant.slackbot.web import make_client
from connectors.slack.client import pages

EVENT_TYPE = "assistant_report"
_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


class SlackPoster:
    def __init__(
        self, client: WebClient, *, workspace_group: str | None = None, history_limit: int = 1000
    ) -> None:
        self.client = client
        self._workspace_group = workspace_group
        self.history_limit = history_limit
        self._auth: dict | None = None
        self._names: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings) -> SlackPoster:
        return cls(
            make_client(settings, connection_retries=False),
            workspace_group=settings.slack.workspace_principal,
        )

    def auth(self) -> dict:
        if self._auth is None:
            try:
                self._auth = dict(self.client.auth_test().data)
            except SlackApiError as e:
                raise AuthError(
                    f"Slack rejected the bot token ({e.response.get('error')}): check slack.bot_token."
                ) from None
        return self._auth

    def resolve(self, channel: str) -> str:
        """'C123' → 'C123'; '#eng' or 'eng' → the id of the channel named eng that the bot can see."""
        ref = channel.strip()
        if _ID.match(ref):
            return ref
        name = ref.lstrip("#").lower()
        if name not in self._names:
            kw = {"types": "public_channel,private_channel", "exclude_archived": True, "limit": 1000}
            for resp in pages(self.client.conversations_list, **kw):
                for ch in resp.get("channels") or []:
                    self._names[str(ch.get("name", "")).lower()] = ch["id"]
                if name in self._names:
                    break
        if name not in self._names:
            raise ConfigError(
                f"The bot cannot see a channel named #{name}: check the name, or invite the bot "
                f"(/invite @assistant) if it is private."
            )
        return self._names[name]

    def audience(self, channel_id: str) -> Audience:
        auth = self.auth()
        group = self._workspace_group or f"slack:{auth.get('team_id')}"
        return channel_audience(
            self.client,
            channel_id,
            workspace_group=group,
            team_id=auth.get("team_id"),
            bot_user_id=auth.get("user_id"),
        )

    def post(self, channel_id: str, *, report: Report, run_key: str) -> str:
        try:
            resp = self.client.chat_postMessage(
                channel=channel_id,
                text=report.text(),
                blocks=report_blocks(report),
                unfurl_links=False,
                unfurl_media=False,
                metadata={"event_type": EVENT_TYPE, "event_payload": {"run_key": run_key}},
            )
        except SlackApiError as e:
            err = e.response.get("error")
            hint = (
                " Invite the bot to the channel (/invite @assistant)."
                if err in ("not_in_channel", "channel_not_found")
                else ""
            )
            raise ConnectorError(f"Slack refused the report for {channel_id}: {err}.{hint}") from None
        return str(resp["ts"])

    def find(self, channel_id: str, run_key: str) -> str | None:
        """The ts of a message by this bot that carries ``run_key`` (metadata, text or blocks)."""
        bot_id, bot_user = self.auth().get("bot_id"), self.auth().get("user_id")
        seen = 0
        mark = re.compile(rf"key {re.escape(run_key)}(?![\w-])")
        kw = {"channel": channel_id, "limit": 200, "include_all_metadata": True}
        for resp in pages(self.client.conversations_history, **kw):
            for m in resp.get("messages") or []:
                seen += 1
                if not (m.get("bot_id") and (m.get("bot_id") == bot_id or m.get("user") == bot_user)):
                    continue
                payload = (m.get("metadata") or {}).get("event_payload") or {}
                if (
                    payload.get("run_key") == run_key
                    or mark.search(m.get("text") or "")
                    or mark.search(json.dumps(m.get("blocks") or []))
                ):
                    return str(m["ts"])
            if seen >= self.history_limit:
                break
        return None
