"""Who is asking, and who will read the answer: Slack users and channels → Principals / Audience.

- ``Identity.principals(user_id)``: ``users.info`` → the profile email plus the workspace group
  (``slack:{team_id}``, or ``settings.slack.workspace_principal``) for members of this workspace.
  Results are cached for ``ttl_s`` seconds (positive and negative), so a busy channel costs one
  ``users.info`` per person per hour, not per question; a channel with many people not yet known is
  loaded with one ``users.list`` walk instead.
- ``Identity.channel_audience(channel_id)`` / ``channel_audience(client, channel_id, ...)``: every
  member of the channel (``conversations.members``, all pages) as Principals — an answer posted there
  may only use documents each of them can read.

Fail closed: an unknown, deleted or unreadable user, or a user from another workspace without an
email, becomes ``Principals()`` (public documents only), which narrows a channel's audience rather
than widening it. Bot users (ours and other integrations) are not readers and are left out of a
channel's audience; an empty audience (a channel of bots) is treated as "public only".

Not done here: mapping Slack user groups (``subteam``) to document groups — Drive/Graph groups have
their own ids and Slack cannot tell us which of them a person is in.
"""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk.errors import SlackApiError

from assistant.documents import Principals
from assistant.retrieval import Audience
from connectors.slack.client import pages

log = logging.getLogger(__name__)

UNKNOWN = Principals()  # public documents only


class Identity:
    """Slack user → Principals with a TTL cache; channel → Audience. Thread-safe."""

    def __init__(
        self,
        client,
        *,
        team_id: str,
        workspace_group: str | None = None,
        bot_user_id: str | None = None,
        ttl_s: float = 3600.0,
        page_size: int = 1000,
        bulk_threshold: int = 50,
        clock=time.monotonic,
    ) -> None:
        self.client = client
        self.team_id = team_id
        self.workspace_group = (workspace_group or f"slack:{team_id}").lower()
        self.bot_user_id = bot_user_id
        self.ttl_s = ttl_s
        self.page_size = page_size
        self.bulk_threshold = bulk_threshold  # this many unknown members → one users.list walk
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Principals, bool]] = {}  # user -> (expires, principals, is_bot)

    # -- people ---------------------------------------------------------------------------------
    def principals(self, user_id: str | None) -> Principals:
        return self._lookup(user_id)[0] if user_id else UNKNOWN

    def is_bot(self, user_id: str) -> bool:
        return self._lookup(user_id)[1]

    def _lookup(self, user_id: str) -> tuple[Principals, bool]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(user_id)
            if hit and hit[0] > now:
                return hit[1], hit[2]
        who, is_bot = self._fetch(user_id)
        with self._lock:
            if len(self._cache) > 50_000:  # a bound, not a policy: drop everything stale
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[user_id] = (now + self.ttl_s, who, is_bot)
        return who, is_bot

    def _fetch(self, user_id: str) -> tuple[Principals, bool]:
        if user_id == self.bot_user_id:
            return UNKNOWN, True
        try:
            user = self.client.users_info(user=user_id)["user"]
        except SlackApiError as e:
            log.warning(
                "slackbot: users.info %s failed (%s); treating as unknown (public documents only)",
                user_id,
                e.response.get("error") if e.response is not None else e,
            )
            return UNKNOWN, False
        return self._convert(user)

    def _convert(self, user: dict) -> tuple[Principals, bool]:
        user_id = user.get("id", "")
        if user.get("deleted"):
            return UNKNOWN, False
        if user.get("is_bot") or user_id == "USLACKBOT":
            return UNKNOWN, True
        email = (user.get("profile") or {}).get("email")
        member = user.get("team_id") in (None, self.team_id)  # Slack Connect guests carry their own team
        groups = frozenset({self.workspace_group}) if member and not user.get("is_stranger") else frozenset()
        if not email and not groups:
            return UNKNOWN, False
        return Principals(email=email, groups=groups), False

    def _warm(self, ids: list[str]) -> None:
        """A big channel's first question: one users.list walk (1,000 people a call) instead of a
        users.info per member, which Slack would rate-limit to minutes."""
        now = self._clock()
        with self._lock:
            missing = [u for u in ids if u not in self._cache or self._cache[u][0] <= now]
        if len(missing) < self.bulk_threshold:
            return
        try:
            n = 0
            for resp in pages(self.client.users_list, limit=1000):
                entries = [(m["id"], *self._convert(m)) for m in resp.get("members") or [] if m.get("id")]
                with self._lock:
                    for uid, who, is_bot in entries:
                        self._cache[uid] = (now + self.ttl_s, who, is_bot)
                n += len(entries)
            log.info("slackbot: loaded %d people with users.list for a channel of %d", n, len(ids))
        except SlackApiError as e:  # fall back to users.info one by one
            log.warning("slackbot: users.list failed (%s); looking people up one by one", e)

    # -- channels -------------------------------------------------------------------------------
    def channel_members(self, channel_id: str) -> list[str]:
        members: list[str] = []
        for resp in pages(self.client.conversations_members, channel=channel_id, limit=self.page_size):
            members += resp.get("members") or []
        return list(dict.fromkeys(members))

    def channel_audience(self, channel_id: str) -> Audience:
        """Everyone (human) in the channel. Any failure narrows to public-only, never widens."""
        try:
            ids = self.channel_members(channel_id)
        except SlackApiError as e:
            log.warning(
                "slackbot: conversations.members %s failed (%s); answering from public documents only",
                channel_id,
                e.response.get("error") if e.response is not None else e,
            )
            return Audience((UNKNOWN,))
        self._warm(ids)
        people = [self._lookup(u) for u in ids if u != self.bot_user_id]
        members = tuple(dict.fromkeys(p for p, is_bot in people if not is_bot))
        return Audience(members or (UNKNOWN,))


def channel_audience(
    client,
    channel_id: str,
    *,
    workspace_group: str,
    team_id: str | None = None,
    bot_user_id: str | None = None,
) -> Audience:
    """One-shot form (no shared cache) for callers such as the scheduler: the channel's audience."""
    team = team_id or workspace_group.split(":", 1)[-1].upper()
    return Identity(
        client, team_id=team, workspace_group=workspace_group, bot_user_id=bot_user_id, ttl_s=60
    ).channel_audience(channel_id)
