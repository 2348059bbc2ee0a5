"""The Slack connector: channels the bot is in → one document per thread, plus shared files.

Listing: ``conversations.list`` (public and, when enabled, private channels; never DMs), filtered
by include/exclude names, ids or glob patterns and by membership; then per channel
``conversations.history`` (one Slack page = one ``ChangePage``) and ``conversations.replies`` for
roots with replies. A thread document has id ``C123/1712345678.000100``, path
``#channel/1712345678.000100``, the permalink as url, and ``modified`` = its latest message. A
file shared in a kept message is its own document ``file:F123`` (downloaded with the bearer token,
parsed by the core) with the channel's access and the message it came with in its metadata.

The cursor is one JSON string saved by sync after each page. It holds, per channel: ``newest``
(newest root fully listed), the channel signature (name, visibility, member emails), and a
bounded map of *tracked threads* — roots whose last activity is within ``track_days`` — with each
root's listing signature. The in-progress channel scan (history page cursor, window) and the
channels still to do in this run are in it too, so an interrupted run resumes at the page where it
stopped. An incremental run per channel:
- re-lists history from ``min(newest, now - track_days)``: new roots, and changed roots (edited,
  deleted, new or deleted replies: the root's ``reply_count``/``latest_reply`` change) are emitted;
  unchanged ones are not. Threads with a reply in the last ``recheck_hours`` are re-fetched anyway,
  which is how an edited *reply* is seen (Slack's history does not show reply edits);
- tracked roots missing from the re-listed window are deleted (with their files);
- tracked threads whose root is older than the window (old threads revived by a reply) are checked
  one by one (``conversations.replies`` limit 1);
- a changed channel signature (renamed, made private, members joined/left) re-lists the whole
  channel, so every document gets the new access;
- a channel that disappeared (bot removed, excluded, deleted) turns the run into a full enumeration,
  whose last page prunes what the source no longer lists.

- a *sweep*, at most every ``sweep_hours`` per channel, re-lists the channel's whole ``days_back``
  history (one ``conversations.history`` call per page of roots, no ``replies`` calls for quiet
  threads) and emits the untracked roots older than the window whose ``latest_reply`` or root edit
  is newer than the previous sweep: a reply to a thread quiet for longer than ``track_days`` is
  indexed within ``sweep_hours``, without a full sync.

What it does not see without a full sync (``assistant ingest --source slack --full``): an edit of a
*reply* in a thread quiet for longer than ``track_days`` (history shows no reply edits), and
deletions of roots older than that.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from assistant.documents import Access, ChangePage, ItemRef
from assistant.errors import CursorExpired, NotFound, PermissionDenied
from connectors.slack import convert
from connectors.slack.client import SlackClient
from connectors.slack.config import SlackConfig
from connectors.slack.fetch import ThreadAndFileFetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Chan:
    id: str
    name: str
    private: bool
    sig: str
    access: Access


class SlackConnector(ThreadAndFileFetch):
    def __init__(
        self,
        config: SlackConfig,
        *,
        client: SlackClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = config.source_name
        self.client = client or SlackClient(
            config.bot_token,
            base_url=config.api_url,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
        self.clock = clock
        self._listing: dict[str, dict] | None = None  # channel id -> conversations.list entry (this run)
        self._ctx: dict[str, _Chan] = {}
        self._full_ids: set[str] | None = None  # ids listed by a full enumeration started in this object

    # ---- workspace --------------------------------------------------------------------------------
    @property
    def team_id(self) -> str:
        return self.client.auth().get("team_id") or "unknown"

    @property
    def _self_ids(self) -> tuple[str, ...]:
        a = self.client.auth()
        return tuple(x for x in (a.get("user_id"), a.get("bot_id")) if x)

    def _channels(self) -> dict[str, dict]:
        if self._listing is None:
            types = "public_channel,private_channel" if self.config.include_private else "public_channel"
            chans = self.client.iterate(
                "conversations.list",
                "channels",
                types=types,
                exclude_archived=False,
                limit=self.config.page_size,
            )
            self._listing = {c["id"]: c for c in chans if self._selected(c)}
        return self._listing

    def _selected(self, ch: dict) -> bool:
        if not convert.is_indexable_channel(ch) or not ch.get("is_member"):
            return False
        if convert.is_private_channel(ch) and not self.config.include_private:
            return False

        def match(patterns: tuple[str, ...]) -> bool:
            return any(
                p == ch["id"] or fnmatch.fnmatchcase(ch.get("name", ""), p.lstrip("#")) for p in patterns
            )

        return (not self.config.channels or match(self.config.channels)) and not match(
            self.config.exclude_channels
        )

    def _chan(self, cid: str) -> _Chan:
        """Name, visibility, signature and Access of a channel (cached for this run)."""
        if cid not in self._ctx:
            ch = self._channels().get(cid)
            if ch is None:
                raise NotFound(
                    f"channel {cid} is not (or no longer) indexed: the bot left it or it is excluded"
                )
            private = convert.is_private_channel(ch)
            emails: list[str] = []
            if private:
                emails = sorted(
                    {
                        e
                        for u in self.client.members(cid, page_size=self.config.page_size)
                        if (e := self.client.user_email(u))
                    }
                )
            self._ctx[cid] = _Chan(
                cid,
                ch.get("name") or cid,
                private,
                convert.channel_signature(ch.get("name") or cid, private, emails),
                convert.channel_access(self.team_id, private=private, emails=emails),
            )
        return self._ctx[cid]

    def _channel_name(self, cid: str) -> str | None:
        ch = (self._listing or {}).get(cid)
        return ch.get("name") if ch else None

    # ---- cursor -----------------------------------------------------------------------------------
    def _new_state(self, mode: str) -> dict:
        return {
            "v": 1,
            "team": self.team_id,
            "mode": mode,
            "gen": 0,
            "pending": sorted(self._channels()),
            "scan": None,
            "channels": {},
        }

    def _load(self, cursor: str) -> dict:
        try:
            state = json.loads(cursor)
            ok = state.get("v") == 1 and isinstance(state.get("channels"), dict)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise CursorExpired("The saved Slack cursor is not one this version understands; re-enumerating.")
        if state.get("team") != self.team_id:
            raise CursorExpired("The saved Slack cursor belongs to another workspace; re-enumerating.")
        return state

    # ---- listing ----------------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> Iterator[ChangePage]:
        self._listing, self._ctx = None, {}  # channels and memberships are re-read every run
        self._full_ids = None
        if cursor is None:
            state = self._start_full()
        else:
            state = self._load(cursor)
            if not state["pending"] and state["scan"] is None and state["mode"] != "full":
                state = self._start_incremental(state)
        while state["pending"] or state["scan"]:
            if state["scan"] is None and not self._begin_scan(state, state["pending"][0]):
                state["pending"].pop(0)
                continue
            yield from self._scan(state)
        if state["mode"] == "full":
            state["mode"] = "inc"
            yield ChangePage(next_cursor=json.dumps(state), prune=True)

    def _start_full(self) -> dict:
        self._full_ids = set()
        return self._new_state("full")

    def _start_incremental(self, state: dict) -> dict:
        listed = self._channels()
        gone = [c for c in state["channels"] if c not in listed]
        if gone or state.get("needs_full"):
            log.info(
                "slack: channels %s are no longer indexed; running a full enumeration to prune them", gone
            )
            return self._start_full()
        state.update(mode="inc", pending=sorted(listed))
        return state

    def _begin_scan(self, state: dict, cid: str) -> bool:
        try:
            chan = self._chan(cid)
        except (NotFound, PermissionDenied) as e:
            log.warning("slack: skipping channel %s (%s)", cid, e)
            state["channels"].pop(cid, None)
            state["needs_full"] = True
            return False
        ch = state["channels"].setdefault(cid, {"newest": None, "sig": None, "threads": {}})
        now = self.clock()
        boundary = now - self.config.days_back * 86400
        whole = state["mode"] == "full" or ch["newest"] is None or ch["sig"] != chan.sig
        window = (
            boundary
            if whole
            else max(boundary, min(float(ch["newest"]), now - self.config.track_days * 86400))
        )
        swept = ch.get("swept")  # when the last whole listing or sweep of this channel started
        sweep = (
            not whole
            and window > boundary
            and self.config.sweep_hours > 0
            and (swept is None or now - float(swept) >= self.config.sweep_hours * 3600)
        )
        state["gen"] += 1
        state["scan"] = {
            "ch": cid,
            "oldest": f"{boundary if sweep else window:.6f}",
            "cursor": None,
            "top": None,
            "gen": state["gen"],
            "sig": chan.sig,
            "whole": whole,
            "window": window,
            "started": now,
            "since": (float(swept) if swept is not None else window) if sweep else None,
        }
        return True

    def _scan(self, state: dict) -> Iterator[ChangePage]:
        scan = state["scan"]
        cid = scan["ch"]
        try:
            chan = self._chan(cid)
        except (NotFound, PermissionDenied):
            chan = None
        if chan is None or chan.sig != scan["sig"]:  # resumed after the channel changed: start it over
            state["scan"] = None
            if chan is None:
                state["pending"].pop(0)
                state["channels"].pop(cid, None)
                state["needs_full"] = True
            return
        ch = state["channels"][cid]
        tracked: dict = ch["threads"]
        while True:
            try:
                msgs, nxt = self.client.page(
                    "conversations.history",
                    "messages",
                    cursor=scan["cursor"],
                    channel=cid,
                    oldest=scan["oldest"],
                    limit=self.config.page_size,
                )
            except (NotFound, PermissionDenied) as e:  # bot removed mid-run: prune it in a full run next
                log.warning("slack: channel %s became unreadable (%s)", cid, e)
                state["channels"].pop(cid, None)
                state.update(scan=None, needs_full=True)
                state["pending"].pop(0)
                yield ChangePage(next_cursor=json.dumps(state))
                return
            if msgs and scan["top"] is None:
                scan["top"] = msgs[0]["ts"]
            upserts, deletions = self._roots(chan, msgs, tracked, scan)
            scan["cursor"] = nxt
            self._trim(tracked)
            if nxt:
                yield ChangePage(tuple(upserts), tuple(deletions), json.dumps(state))
                continue
            if state["mode"] != "full":  # a full enumeration prunes instead
                u, d = self._finish_window(chan, tracked, scan)
                upserts += u
                deletions += d
            tops = [t for t in (ch["newest"], scan["top"]) if t]
            ch["newest"] = max(tops, key=float) if tops else scan["oldest"]
            ch["sig"] = scan["sig"]
            if scan["whole"] or scan.get("since") is not None:
                ch["swept"] = scan.get("started", self.clock())
            self._trim(tracked)
            state["scan"] = None
            state["pending"].pop(0)
            yield ChangePage(tuple(upserts), tuple(deletions), json.dumps(state))
            return

    def _roots(self, chan: _Chan, msgs: list[dict], tracked: dict, scan: dict) -> tuple[list, list]:
        """ItemRefs for new or changed roots of one history page (and deletions of emptied ones)."""
        upserts: list[ItemRef] = []
        deletions: list[str] = []
        now = self.clock()
        broadcast: set[str] = set()
        for m in msgs:
            sub = m.get("subtype") or ""
            if sub == "thread_broadcast":
                broadcast.add(m.get("thread_ts") or "")
                continue
            if sub in convert.NOISE_SUBTYPES:
                continue
            ts = m["ts"]
            entry = tracked.get(ts)
            if entry is None and scan.get("since") is not None and float(ts) <= float(scan["window"]):
                # a sweep, below the usual window: only threads active since the last sweep
                touched = max(
                    float(m.get("latest_reply") or 0), float((m.get("edited") or {}).get("ts") or 0)
                )
                if touched <= scan["since"]:
                    continue
            activity = float(m.get("latest_reply") or ts)
            hot = bool(m.get("reply_count")) and activity >= now - self.config.recheck_hours * 3600
            if not scan["whole"] and entry and entry[0] == convert.message_signature(m) and not hot:
                entry[3] = scan["gen"]
                continue
            self._emit(chan, m, tracked, scan["gen"], upserts, deletions)
        for ts in broadcast - {m["ts"] for m in msgs}:
            entry = tracked.get(ts)
            if entry and entry[1] >= max(float(m["ts"]) for m in msgs if m.get("thread_ts") == ts):
                continue
            self._check_thread(chan, ts, tracked, scan["gen"], upserts, deletions, force=True)
        return upserts, deletions

    def _emit(self, chan: _Chan, root: dict, tracked: dict, gen: int, upserts: list, deletions: list) -> None:
        ts = root["ts"]
        old = tracked.get(ts)
        refs = self._thread_refs(chan, root)
        fids = [r.id for r in refs[1:]]
        if refs:
            upserts.extend(refs)
            if self._full_ids is not None:
                self._full_ids.update(r.id for r in refs)
        elif old and old[4]:
            deletions.append(f"{chan.id}/{ts}")
        if old:
            deletions.extend(f for f in old[2] if f not in fids)
        tracked[ts] = [
            convert.message_signature(root),
            float(root.get("latest_reply") or ts),
            fids,
            gen,
            1 if refs else 0,
        ]

    def _check_thread(
        self,
        chan: _Chan,
        ts: str,
        tracked: dict,
        gen: int,
        upserts: list,
        deletions: list,
        *,
        force: bool = False,
    ) -> None:
        """Re-check one thread by its root (old root revived, or seen through a broadcast reply)."""
        try:
            msgs, _ = self.client.page("conversations.replies", "messages", channel=chan.id, ts=ts, limit=1)
        except NotFound:
            msgs = []
        root = next((m for m in msgs if m.get("ts") == ts), None)
        old = tracked.get(ts)
        if root is None:
            if old:
                deletions.extend(([f"{chan.id}/{ts}"] if old[4] else []) + old[2])
                tracked.pop(ts, None)
            return
        hot = float(root.get("latest_reply") or ts) >= self.clock() - self.config.recheck_hours * 3600
        if old and old[0] == convert.message_signature(root) and not hot and not force:
            old[3] = gen
            return
        self._emit(chan, root, tracked, gen, upserts, deletions)

    def _finish_window(self, chan: _Chan, tracked: dict, scan: dict) -> tuple[list, list]:
        """After re-listing the window: tracked roots in it that were not seen are gone; tracked
        roots older than it (threads revived by a reply) are checked one by one."""
        upserts: list[ItemRef] = []
        deletions: list[str] = []
        oldest = float(scan["oldest"])
        for ts, entry in list(tracked.items()):
            if float(ts) > oldest and entry[3] != scan["gen"]:
                deletions.extend(([f"{chan.id}/{ts}"] if entry[4] else []) + entry[2])
                del tracked[ts]
        horizon = self.clock() - self.config.track_days * 86400
        old_active = sorted(
            (ts for ts, e in tracked.items() if float(ts) <= oldest and e[1] >= horizon),
            key=lambda t: -tracked[t][1],
        )[:50]
        for ts in old_active:
            self._check_thread(chan, ts, tracked, scan["gen"], upserts, deletions)
        return upserts, deletions

    def _trim(self, tracked: dict) -> None:
        """Forget threads quiet for longer than ``track_days``; keep at most the busiest N."""
        horizon = self.clock() - self.config.track_days * 86400
        for ts in [t for t, e in tracked.items() if e[1] < horizon]:
            del tracked[ts]
        if len(tracked) > self.config.max_tracked_threads:
            keep = sorted(tracked, key=lambda t: -tracked[t][1])[: self.config.max_tracked_threads]
            for ts in set(tracked) - set(keep):
                del tracked[ts]

    # ---- threads and files ------------------------------------------------------------------------
    def _thread_messages(self, cid: str, root: dict | None, ts: str) -> list[dict]:
        if root is not None and not root.get("reply_count") and root.get("subtype") != "tombstone":
            return [root]
        try:
            got = self.client.iterate(
                "conversations.replies", "messages", channel=cid, ts=ts, limit=self.config.page_size
            )
            by_ts = {m["ts"]: m for m in got}
        except NotFound:
            return []
        return sorted(by_ts.values(), key=lambda m: float(m["ts"]))

    def _kept(self, messages: list[dict]) -> list[dict]:
        return [
            m
            for m in messages
            if convert.keep_message(m, include_bots=self.config.include_bots, self_ids=self._self_ids)
        ]

    def _thread_refs(self, chan: _Chan, root: dict) -> list[ItemRef]:
        """[thread ref, file refs...] for a root, or [] when nothing in the thread is worth indexing."""
        messages = self._thread_messages(chan.id, root, root["ts"])
        kept = self._kept(messages)
        if not kept:
            return []
        version = convert.thread_version(kept, channel_sig=chan.sig, include_bots=self.config.include_bots)
        refs = [ItemRef(f"{chan.id}/{root['ts']}", version, {"messages": messages})]
        if self.config.include_files:
            for m in kept:
                for f in m.get("files") or []:
                    if self.file_ok(f):
                        refs.append(
                            ItemRef(
                                f"file:{f['id']}",
                                convert.file_version(f, channel_sig=chan.sig),
                                {
                                    "file": f,
                                    "channel": chan.id,
                                    "thread_ts": root["ts"],
                                    "message_ts": m["ts"],
                                },
                            )
                        )
        return refs

    # ---- pruning ----------------------------------------------------------------------------------
    def list_ids(self) -> Iterator[str]:
        """Every id that exists now. Right after a full enumeration run by this object, the ids it
        listed; otherwise a fresh walk of every channel (threads with replies are opened for files)."""
        if self._full_ids is not None:
            yield from sorted(self._full_ids)
            return
        boundary = f"{self.clock() - self.config.days_back * 86400:.6f}"
        self._listing, self._ctx = None, {}
        for cid in sorted(self._channels()):
            chan = self._chan(cid)
            for m in self.client.iterate(
                "conversations.history", "messages", channel=cid, oldest=boundary, limit=self.config.page_size
            ):
                if (m.get("subtype") or "") in convert.NOISE_SUBTYPES | {"thread_broadcast"}:
                    continue
                for r in self._thread_refs(chan, m):
                    yield r.id
