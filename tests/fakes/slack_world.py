"""The state behind the fake Slack Web API (``tests/fakes/slack.py``) and its method handlers.

``SlackWorld`` holds a workspace: users, channels (public, private, DMs), messages with threads,
edits and deletions, files, and everything a bot posted. Tests build scenarios with its methods
(``add_user``, ``add_channel``, ``post``, ``edit``, ``delete``, ``add_file`` ...). ``API`` maps a
Web API method name to a handler ``(world, params) -> dict`` returning the real response shapes
(``ok``, ``error``, ``response_metadata.next_cursor``, ``has_more``).

What it does not do: Events API delivery, OAuth, rich-text blocks beyond storing them, search,
Enterprise Grid, or Slack's eventual consistency.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote


class SlackError(Exception):
    """A Web API error: becomes ``{"ok": false, "error": code}`` (HTTP 200, as Slack does)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class User:
    id: str
    name: str
    email: str | None = None
    real_name: str = ""
    is_bot: bool = False
    deleted: bool = False

    def resource(self, team_id: str) -> dict:
        profile = {
            "real_name": self.real_name,
            "display_name": self.name,
            "real_name_normalized": self.real_name,
            "display_name_normalized": self.name,
        }
        if self.email:
            profile["email"] = self.email
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name,
            "is_bot": self.is_bot,
            "is_admin": False,
            "tz": "UTC",
            "profile": profile,
        }


@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    archived: bool = False
    members: list[str] = field(default_factory=list)
    created: int = 0

    def resource(self, bot_user: str) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not (self.private or self.is_im or self.is_mpim),
            "is_group": self.private and not self.is_mpim,
            "is_im": self.is_im,
            "is_mpim": self.is_mpim,
            "is_private": self.private or self.is_im or self.is_mpim,
            "is_archived": self.archived,
            "is_general": self.name == "general",
            "created": self.created,
            "is_member": bot_user in self.members,
            "num_members": len(self.members),
            "topic": {"value": ""},
            "purpose": {"value": ""},
        }


def _cursor(epoch: int, key: str) -> str:
    return base64.b64encode(json.dumps({"e": epoch, "k": key}).encode()).decode()


class SlackWorld:
    """A whole workspace. Thread-safe: the server calls handlers under ``self.lock``."""

    def __init__(
        self,
        *,
        team_id: str = "T0FAKE",
        team: str = "Fake Co",
        domain: str = "fakeco",
        bot_user: str = "UBOT",
        bot_id: str = "BBOT",
        public_base: str = "",
    ) -> None:
        self.lock = threading.RLock()
        self.team_id, self.team, self.domain = team_id, team, domain
        self.bot_user, self.bot_id = bot_user, bot_id
        self.public_base = public_base  # the server's root URL, for url_private (set by FakeSlack)
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, dict[str, dict]] = {}  # channel -> ts -> message (replies included)
        self.files: dict[str, dict] = {}
        self.file_content: dict[str, bytes] = {}
        self.posted: list[dict] = []  # chat.postMessage, in order (a copy of each message as posted)
        self.updates: list[dict] = []  # chat.update params, in order
        self.ephemerals: list[dict] = []
        self.deleted_by_bot: list[dict] = []
        self.reactions: list[dict] = []
        self.views: list[dict] = []
        self.cursor_epoch = 0
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self.users[bot_user] = User(bot_user, "assistant", None, "Assistant", is_bot=True)

    # ---- scenario builder -------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def next_ts(self, *, ago: float | None = None) -> str:
        """A unique ts: now (or ``ago`` seconds back), strictly increasing for 'now' stamps."""
        if ago is not None:
            t = time.time() - ago
            while any(f"{t:.6f}" in msgs for msgs in self.messages.values()):
                t += 0.000001
            return f"{t:.6f}"
        t = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = t
        return f"{t:.6f}"

    def add_user(
        self,
        name: str,
        *,
        email: str | None = None,
        real_name: str | None = None,
        is_bot: bool = False,
        user_id: str | None = None,
    ) -> str:
        with self.lock:
            uid = user_id or self._new_id("U")
            self.users[uid] = User(uid, name, email, real_name or name.title(), is_bot=is_bot)
            return uid

    def add_channel(
        self,
        name: str,
        *,
        private: bool = False,
        members: list[str] = (),
        bot_member: bool = True,
        is_im: bool = False,
        is_mpim: bool = False,
        archived: bool = False,
    ) -> str:
        with self.lock:
            prefix = "D" if is_im else ("G" if is_mpim else "C")
            cid = self._new_id(prefix)
            mem = list(dict.fromkeys([*members, *([self.bot_user] if bot_member else [])]))
            self.channels[cid] = Channel(
                cid, name, private, is_im, is_mpim, archived, mem, int(time.time()) - 86400 * 400
            )
            self.messages[cid] = {}
            return cid

    def channel_id(self, ref: str) -> str:
        ref = ref.lstrip("#")
        if ref in self.channels:
            return ref
        for c in self.channels.values():
            if c.name == ref:
                return c.id
        raise SlackError("channel_not_found")

    def add_member(self, channel: str, user: str) -> None:
        with self.lock:
            ch = self.channels[self.channel_id(channel)]
            if user not in ch.members:
                ch.members.append(user)

    def remove_member(self, channel: str, user: str) -> None:
        with self.lock:
            ch = self.channels[self.channel_id(channel)]
            ch.members = [m for m in ch.members if m != user]

    def add_file(
        self,
        name: str,
        content: bytes | str,
        *,
        mimetype: str = "text/plain",
        user: str | None = None,
        title: str | None = None,
    ) -> str:
        with self.lock:
            fid = self._new_id("F")
            data = content.encode() if isinstance(content, str) else content
            now = int(time.time())
            url = f"{self.public_base}/files-pri/{self.team_id}-{fid}/{quote(name)}"
            self.files[fid] = {
                "id": fid,
                "created": now,
                "timestamp": now,
                "updated": now,
                "name": name,
                "title": title or name,
                "mimetype": mimetype,
                "filetype": name.rsplit(".", 1)[-1],
                "pretty_type": mimetype,
                "user": user or self.bot_user,
                "mode": "hosted",
                "size": len(data),
                "url_private": url,
                "url_private_download": url + "?download=1",
                "permalink": f"https://{self.domain}.slack.com/files/{user}/{fid}/{name}",
                "channels": [],
                "groups": [],
                "ims": [],
                "is_public": False,
            }
            self.file_content[fid] = data
            return fid

    def delete_file(self, fid: str) -> None:
        with self.lock:
            self.files.pop(fid, None)
            self.file_content.pop(fid, None)
            for msgs in self.messages.values():
                for m in msgs.values():
                    if any(f.get("id") == fid for f in m.get("files", [])):
                        m["files"] = [f for f in m["files"] if f.get("id") != fid]

    def post(
        self,
        channel: str,
        user: str | None,
        text: str,
        *,
        thread_ts: str | None = None,
        ts: str | None = None,
        ago: float | None = None,
        files: list[str] = (),
        subtype: str | None = None,
        bot_id: str | None = None,
        username: str | None = None,
        broadcast: bool = False,
        extra: dict | None = None,
    ) -> str:
        """Add a message (a reply when ``thread_ts`` is given) and return its ts."""
        with self.lock:
            cid = self.channel_id(channel)
            ts = ts or self.next_ts(ago=ago)
            msg: dict = {"type": "message", "text": text, "ts": ts, "team": self.team_id}
            if user:
                msg["user"] = user
            if subtype:
                msg["subtype"] = subtype
            if bot_id:
                msg["bot_id"] = bot_id
            if username:
                msg["username"] = username
            if files:
                msg["files"] = [self._file_stub(f) for f in files]
                msg["upload"] = True
                for f in files:
                    key = "groups" if self.channels[cid].private else "channels"
                    if cid not in self.files[f][key]:
                        self.files[f][key].append(cid)
            if thread_ts:
                root = self.messages[cid].get(thread_ts)
                if root is None:
                    raise SlackError("thread_not_found")
                msg["thread_ts"] = thread_ts
                msg["parent_user_id"] = root.get("user", "")
                if broadcast:
                    msg["subtype"] = "thread_broadcast"
            msg.update(extra or {})
            self.messages[cid][ts] = msg
            return ts

    def _file_stub(self, fid: str) -> dict:
        f = self.files[fid]
        return {
            k: f[k]
            for k in (
                "id",
                "created",
                "timestamp",
                "name",
                "title",
                "mimetype",
                "filetype",
                "user",
                "mode",
                "size",
                "url_private",
                "url_private_download",
                "permalink",
            )
        }

    def edit(self, channel: str, ts: str, text: str) -> None:
        with self.lock:
            m = self.messages[self.channel_id(channel)][ts]
            m["text"] = text
            m["edited"] = {"user": m.get("user", ""), "ts": self.next_ts()}

    def delete(self, channel: str, ts: str) -> None:
        """Delete a message. A thread root with live replies becomes a tombstone, as in Slack."""
        with self.lock:
            cid = self.channel_id(channel)
            msgs = self.messages[cid]
            if ts not in msgs:
                raise SlackError("message_not_found")
            m = msgs[ts]
            if m.get("thread_ts") in (None, ts) and self._replies(cid, ts):
                msgs[ts] = {
                    "type": "message",
                    "subtype": "tombstone",
                    "text": "This message was deleted.",
                    "ts": ts,
                    "thread_ts": ts,
                    "user": "USLACKBOT",
                    "hidden": True,
                    "team": self.team_id,
                }
                return
            root_ts = m.get("thread_ts") if m.get("thread_ts") != ts else None
            del msgs[ts]
            root = msgs.get(root_ts or "")
            if root and root.get("subtype") == "tombstone" and not self._replies(cid, root_ts):
                del msgs[root_ts]

    def message(self, channel: str, ts: str) -> dict | None:
        with self.lock:
            m = self.messages.get(self.channel_id(channel), {}).get(ts)
            return dict(m) if m else None

    def invalidate_cursors(self) -> None:
        """Every pagination cursor handed out so far becomes ``invalid_cursor``."""
        with self.lock:
            self.cursor_epoch += 1

    # ---- views of the state -----------------------------------------------------------------
    def _replies(self, cid: str, root_ts: str) -> list[dict]:
        return sorted(
            (m for m in self.messages[cid].values() if m.get("thread_ts") == root_ts and m["ts"] != root_ts),
            key=lambda m: float(m["ts"]),
        )

    def _rendered(self, cid: str, m: dict) -> dict:
        out = json.loads(json.dumps(m))
        is_root = m.get("thread_ts") in (None, m["ts"])
        if is_root:
            reps = self._replies(cid, m["ts"])
            if reps:
                users = list(dict.fromkeys(r.get("user", "") for r in reps if r.get("user")))
                out.update(
                    {
                        "thread_ts": m["ts"],
                        "reply_count": len(reps),
                        "reply_users_count": len(users),
                        "reply_users": users[:5],
                        "latest_reply": reps[-1]["ts"],
                        "subscribed": False,
                    }
                )
            elif out.get("subtype") != "tombstone":
                out.pop("thread_ts", None)
        return out

    def _visible_channel(self, channel: str, *, need_member: bool = True) -> Channel:
        if not channel:
            raise SlackError("channel_not_found")
        ch = self.channels.get(channel)
        if ch is None:
            raise SlackError("channel_not_found")
        is_member = self.bot_user in ch.members
        if (ch.private or ch.is_im or ch.is_mpim) and not is_member:
            raise SlackError("channel_not_found")
        if need_member and not is_member:
            raise SlackError("not_in_channel")
        return ch

    def _decode_cursor(self, cursor: str | None) -> str | None:
        if not cursor:
            return None
        try:
            data = json.loads(base64.b64decode(cursor.encode(), validate=True))
            if data["e"] != self.cursor_epoch:
                raise ValueError
            return str(data["k"])
        except (ValueError, KeyError, TypeError):
            raise SlackError("invalid_cursor") from None

    def _page(
        self, items: list, key, params: dict, *, default: int, maximum: int, newest_first: bool = False
    ) -> tuple[list, dict]:
        """Cursor pagination over ``items`` (already ordered); the cursor names the next item's key."""
        limit = _int(params.get("limit"), default) or default
        limit = max(1, min(limit, maximum))
        start_key = self._decode_cursor(params.get("cursor"))
        start = 0
        if start_key is not None:
            keys = [key(i) for i in items]
            start = next((n for n, k in enumerate(keys) if k == start_key), None)
            if start is None:  # the item was deleted since: continue at the next one in order
                start = next(
                    (n for n, k in enumerate(keys) if _after(k, start_key, newest_first)), len(items)
                )
        page = items[start : start + limit]
        rest = items[start + limit :]
        meta = {"next_cursor": _cursor(self.cursor_epoch, key(rest[0])) if rest else ""}
        return page, meta


def _after(k: str, start_key: str, newest_first: bool) -> bool:
    try:
        a, b = float(k), float(start_key)
    except ValueError:
        a, b = k, start_key  # ids
    return a < b if newest_first else a > b


def _int(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _bool(v) -> bool:
    return str(v).lower() in ("1", "true")


def _ts_in(ts: str, params: dict) -> bool:
    t = float(ts)
    incl = _bool(params.get("inclusive"))
    if params.get("oldest"):
        o = float(params["oldest"])
        if t < o or (t == o and not incl):
            return False
    if params.get("latest"):
        la = float(params["latest"])
        if t > la or (t == la and not incl):
            return False
    return True


# ---- method handlers ------------------------------------------------------------------------
def auth_test(w: SlackWorld, p: dict) -> dict:
    return {
        "url": f"https://{w.domain}.slack.com/",
        "team": w.team,
        "user": "assistant",
        "team_id": w.team_id,
        "user_id": w.bot_user,
        "bot_id": w.bot_id,
        "is_enterprise_install": False,
    }


def conversations_list(w: SlackWorld, p: dict) -> dict:
    types = set((p.get("types") or "public_channel").split(","))
    out = []
    for ch in sorted(w.channels.values(), key=lambda c: c.id):
        kind = (
            "im"
            if ch.is_im
            else "mpim"
            if ch.is_mpim
            else "private_channel"
            if ch.private
            else "public_channel"
        )
        if kind not in types or (ch.archived and _bool(p.get("exclude_archived"))):
            continue
        if kind != "public_channel" and w.bot_user not in ch.members:
            continue  # private conversations are listed only for members
        out.append(ch.resource(w.bot_user))
    page, meta = w._page(out, lambda c: c["id"], p, default=100, maximum=1000)
    return {"channels": page, "response_metadata": meta}


def conversations_info(w: SlackWorld, p: dict) -> dict:
    return {"channel": w._visible_channel(p.get("channel", ""), need_member=False).resource(w.bot_user)}


def conversations_members(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(p.get("channel", ""), need_member=False)
    page, meta = w._page(sorted(ch.members), lambda u: u, p, default=100, maximum=1000)
    return {"members": page, "response_metadata": meta}


def conversations_history(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(p.get("channel", ""))
    msgs = [
        m
        for m in w.messages[ch.id].values()
        if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
    ]
    msgs = sorted((m for m in msgs if _ts_in(m["ts"], p)), key=lambda m: -float(m["ts"]))
    page, meta = w._page(msgs, lambda m: m["ts"], p, default=100, maximum=999, newest_first=True)
    return {
        "messages": [w._rendered(ch.id, m) for m in page],
        "has_more": bool(meta["next_cursor"]),
        "pin_count": 0,
        "response_metadata": meta,
    }


def conversations_replies(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(p.get("channel", ""))
    ts = p.get("ts") or ""
    m = w.messages[ch.id].get(ts)
    if m is None:
        raise SlackError("thread_not_found")
    root_ts = m.get("thread_ts") or ts
    root = w.messages[ch.id].get(root_ts)
    if root is None:
        raise SlackError("thread_not_found")
    thread = [root, *(r for r in w._replies(ch.id, root_ts) if _ts_in(r["ts"], p))]
    page, meta = w._page(thread, lambda m: m["ts"], p, default=1000, maximum=1000)
    return {
        "messages": [w._rendered(ch.id, x) for x in page],
        "has_more": bool(meta["next_cursor"]),
        "response_metadata": meta,
    }


def conversations_open(w: SlackWorld, p: dict) -> dict:
    users = [u for u in str(p.get("users", "")).split(",") if u]
    if not users or any(u not in w.users for u in users):
        raise SlackError("user_not_found")
    for ch in w.channels.values():
        if ch.is_im and set(ch.members) == {w.bot_user, *users}:
            return {"channel": {"id": ch.id}}
    return {
        "channel": {
            "id": w.add_channel(
                f"dm-{'-'.join(users)}", is_im=len(users) == 1, is_mpim=len(users) > 1, members=users
            )
        }
    }


def users_info(w: SlackWorld, p: dict) -> dict:
    u = w.users.get(p.get("user", ""))
    if u is None:
        raise SlackError("user_not_found")
    return {"user": u.resource(w.team_id)}


def users_list(w: SlackWorld, p: dict) -> dict:
    users = [u.resource(w.team_id) for u in sorted(w.users.values(), key=lambda u: u.id)]
    page, meta = w._page(users, lambda u: u["id"], p, default=100, maximum=1000)
    return {"members": page, "response_metadata": meta}


def users_lookup_by_email(w: SlackWorld, p: dict) -> dict:
    for u in w.users.values():
        if u.email and u.email.lower() == str(p.get("email", "")).lower():
            return {"user": u.resource(w.team_id)}
    raise SlackError("users_not_found")


def files_info(w: SlackWorld, p: dict) -> dict:
    f = w.files.get(p.get("file", ""))
    if f is None:
        raise SlackError("file_not_found")
    return {"file": dict(f), "comments": [], "response_metadata": {"next_cursor": ""}}


def chat_get_permalink(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(p.get("channel", ""), need_member=False)
    m = w.messages[ch.id].get(p.get("message_ts", ""))
    if m is None:
        raise SlackError("message_not_found")
    link = f"https://{w.domain}.slack.com/archives/{ch.id}/p{m['ts'].replace('.', '')}"
    if m.get("thread_ts") not in (None, m["ts"]):
        link += f"?thread_ts={m['thread_ts']}&cid={ch.id}"
    return {"channel": ch.id, "permalink": link}


def _target_channel(w: SlackWorld, channel: str) -> Channel:
    if channel[:1] in ("U", "W") and channel in w.users:
        return w.channels[conversations_open(w, {"users": channel})["channel"]["id"]]
    try:
        cid = w.channel_id(channel) if channel else ""
    except SlackError:
        cid = channel
    return w._visible_channel(cid)


def chat_post_message(w: SlackWorld, p: dict) -> dict:
    ch = _target_channel(w, str(p.get("channel", "")))
    if not p.get("text") and not p.get("blocks") and not p.get("attachments"):
        raise SlackError("no_text")
    blocks = _json_field(p.get("blocks"))
    ts = w.post(
        ch.id,
        w.bot_user,
        str(p.get("text") or ""),
        thread_ts=p.get("thread_ts") or None,
        bot_id=w.bot_id,
        broadcast=_bool(p.get("reply_broadcast")),
        extra={"app_id": "AFAKE", **({"blocks": blocks} if blocks is not None else {})},
    )
    msg = dict(w.messages[ch.id][ts])
    w.posted.append({**msg, "channel": ch.id, "params": dict(p)})
    return {"channel": ch.id, "ts": ts, "message": msg}


def chat_update(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(str(p.get("channel", "")))
    m = w.messages[ch.id].get(str(p.get("ts", "")))
    if m is None:
        raise SlackError("message_not_found")
    if m.get("user") != w.bot_user:
        raise SlackError("cant_update_message")
    if "text" in p:
        m["text"] = str(p["text"])
    if p.get("blocks") is not None:
        m["blocks"] = _json_field(p.get("blocks"))
    m["edited"] = {"user": w.bot_user, "ts": w.next_ts()}
    w.updates.append({"channel": ch.id, **dict(p)})
    return {"channel": ch.id, "ts": m["ts"], "text": m["text"], "message": dict(m)}


def chat_delete(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(str(p.get("channel", "")))
    m = w.messages[ch.id].get(str(p.get("ts", "")))
    if m is None:
        raise SlackError("message_not_found")
    if m.get("user") != w.bot_user:
        raise SlackError("cant_delete_message")
    w.delete(ch.id, m["ts"])
    w.deleted_by_bot.append({"channel": ch.id, "ts": m["ts"]})
    return {"channel": ch.id, "ts": m["ts"]}


def chat_post_ephemeral(w: SlackWorld, p: dict) -> dict:
    ch = _target_channel(w, str(p.get("channel", "")))
    user = str(p.get("user", ""))
    if user not in w.users:
        raise SlackError("user_not_found")
    if user not in ch.members:
        raise SlackError("user_not_in_channel")
    ts = w.next_ts()
    w.ephemerals.append(
        {
            "channel": ch.id,
            "user": user,
            "text": p.get("text", ""),
            "ts": ts,
            "blocks": _json_field(p.get("blocks")),
            "thread_ts": p.get("thread_ts"),
            "params": dict(p),
        }
    )
    return {"message_ts": ts}


def reactions_add(w: SlackWorld, p: dict) -> dict:
    ch = w._visible_channel(str(p.get("channel", "")))
    ts, name = str(p.get("timestamp", "")), str(p.get("name", ""))
    if ts not in w.messages[ch.id]:
        raise SlackError("message_not_found")
    if any(r["channel"] == ch.id and r["timestamp"] == ts and r["name"] == name for r in w.reactions):
        raise SlackError("already_reacted")
    w.reactions.append({"channel": ch.id, "timestamp": ts, "name": name})
    return {}


def views_open(w: SlackWorld, p: dict) -> dict:
    if not p.get("trigger_id"):
        raise SlackError("invalid_arguments")
    view = _json_field(p.get("view")) or {}
    out = {"id": w._new_id("V"), "team_id": w.team_id, **view}
    w.views.append({"trigger_id": p["trigger_id"], "view": out})
    return {"view": out}


def _json_field(v):
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


API = {
    "auth.test": auth_test,
    "conversations.list": conversations_list,
    "conversations.info": conversations_info,
    "conversations.members": conversations_members,
    "conversations.history": conversations_history,
    "conversations.replies": conversations_replies,
    "conversations.open": conversations_open,
    "users.info": users_info,
    "users.list": users_list,
    "users.lookupByEmail": users_lookup_by_email,
    "files.info": files_info,
    "chat.getPermalink": chat_get_permalink,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.delete": chat_delete,
    "chat.postEphemeral": chat_post_ephemeral,
    "reactions.add": reactions_add,
    "views.open": views_open,
}
