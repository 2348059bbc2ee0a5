"""Fetching for the Slack connector (a mixin of ``SlackConnector``): one thread or one shared file
as a ``Document``.

A thread is rendered by ``convert`` (Markdown with authors and times; the title from its first
message), gets its channel's access and its permalink; a file is downloaded with the bearer token
(at most ``max_file_mb``) and keeps the message it was shared with in its metadata. Media, archives
and files Slack does not host are never listed (``file_ok``). It relies on ``SlackConnector``'s
``client``, ``config``, channel lookups and ``_thread_messages``/``_kept``.
Not here: listing and the cursor (``connector``).
"""

from __future__ import annotations

from assistant.documents import Document, ItemRef
from assistant.errors import NotFound, PermissionDenied
from connectors.slack import convert

_SKIP_FILE_MODES = {"tombstone", "hidden_by_limit", "external", "snippet_deleted"}
# media, archives and Slack-native objects have no text to index: listing them would only record
# a parse failure per file and retry it every run
_SKIP_MIME_PREFIXES = (
    "image/",
    "video/",
    "audio/",
    "font/",
    "application/vnd.slack",
    "application/zip",
    "application/x-zip",
    "application/gzip",
    "application/x-tar",
    "application/x-7z",
    "application/x-rar",
    "application/x-msdownload",
)


class ThreadAndFileFetch:
    """``fetch`` and the file filter, mixed into ``SlackConnector``."""

    def file_ok(self, f: dict) -> bool:
        return (
            bool(f.get("id"))
            and f.get("mode") not in _SKIP_FILE_MODES
            and not f.get("is_external")
            and not str(f.get("mimetype") or "").startswith(_SKIP_MIME_PREFIXES)
            and float(f.get("size") or 0) <= self.config.max_file_mb * 1e6
        )

    def fetch(self, ref: ItemRef) -> Document:
        if ref.id.startswith("file:"):
            return self._fetch_file(ref)
        cid, _, ts = ref.id.partition("/")
        chan = self._chan(cid)
        messages = list(ref.meta.get("messages") or []) or self._thread_messages_checked(cid, ts)
        kept = self._kept(messages)
        if not kept:
            raise NotFound(f"thread {ref.id} has nothing left to index")
        names = lambda u: self.client.user_name(u)
        text = convert.thread_markdown(
            chan.name,
            messages,
            user_name=names,
            channel_name_of=self._channel_name,
            include_bots=self.config.include_bots,
            self_ids=self._self_ids,
        )
        title = convert.thread_title(
            chan.name,
            messages,
            user_name=names,
            channel_name_of=self._channel_name,
            include_bots=self.config.include_bots,
            self_ids=self._self_ids,
        )
        modified = max(max(float(m["ts"]), float((m.get("edited") or {}).get("ts") or 0)) for m in kept)
        authors = dict.fromkeys(self.client.user_name(m["user"]) for m in kept if m.get("user"))
        return Document(
            id=ref.id,
            source=self.name,
            path=f"#{chan.name}/{ts}",
            title=title,
            mime="text/markdown",
            content=text.encode("utf-8"),
            access=chan.access,
            version=convert.thread_version(kept, channel_sig=chan.sig, include_bots=self.config.include_bots),
            modified=modified,
            url=self._permalink(cid, ts),
            metadata={
                "kind": "thread",
                "channel": cid,
                "channel_name": chan.name,
                "thread_ts": ts,
                "messages": str(len(kept)),
                "authors": ", ".join(authors),
            },
        )

    def _thread_messages_checked(self, cid: str, ts: str) -> list[dict]:
        try:
            return self._thread_messages(cid, None, ts)
        except PermissionDenied as e:  # the bot can no longer read the channel: fail closed
            raise NotFound(str(e)) from None

    def _permalink(self, cid: str, ts: str, thread_ts: str | None = None) -> str | None:
        base = self.client.auth().get("url")
        if base:
            return convert.permalink(base, cid, ts, thread_ts=thread_ts)
        try:
            return self.client.call("chat.getPermalink", channel=cid, message_ts=ts).get("permalink")
        except NotFound:
            return None

    def _fetch_file(self, ref: ItemRef) -> Document:
        fid = ref.id[len("file:") :]
        info = self.client.call("files.info", file=fid).get("file") or {}
        cid = str(ref.meta.get("channel") or "")
        if not cid:
            cid = next(
                (c for c in [*info.get("channels", []), *info.get("groups", [])] if c in self._channels()), ""
            )
        if not cid or not self.file_ok(info):
            raise NotFound(
                f"file {fid} is not shared in an indexed channel, or is too large or not hosted by Slack"
            )
        chan = self._chan(cid)
        mime = info.get("mimetype") or "application/octet-stream"
        url = info.get("url_private_download") or info.get("url_private")
        if not url:
            raise NotFound(f"file {fid} has no downloadable content")
        data = self.client.download(url, max_bytes=int(self.config.max_file_mb * 1e6), expect_mime=mime)
        meta = {"kind": "file", "channel": cid, "channel_name": chan.name, "file_name": info.get("name", "")}
        if ref.meta.get("message_ts"):
            meta.update(
                thread_ts=str(ref.meta.get("thread_ts")),
                message_ts=str(ref.meta["message_ts"]),
                message_url=self._permalink(cid, str(ref.meta["message_ts"]), str(ref.meta.get("thread_ts")))
                or "",
            )
        return Document(
            id=ref.id,
            source=self.name,
            path=f"#{chan.name}/{info.get('name') or fid}",
            title=info.get("title") or info.get("name") or fid,
            mime=mime,
            content=data,
            access=chan.access,
            version=convert.file_version(info, channel_sig=chan.sig),
            modified=float(info.get("updated") or info.get("timestamp") or info.get("created") or 0) or None,
            url=info.get("permalink"),
            metadata=meta,
        )
