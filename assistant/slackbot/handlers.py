"""The bot's core: what happens after Slack is acknowledged. Listeners in ``app.py`` only parse and call in.

Flows (each runs on the bot's own worker pool, never on the request thread):
- ``answer_message``: a mention in a channel or a DM. A "thinking…" placeholder is posted (in the
  thread for channels), the model's words are streamed into it with ``chat.update`` at most every
  ``settings.slack.stream_every_s``, then it is replaced by the final Block Kit answer.
  Permissions: in a DM the asker's own access; in a channel only documents *every member* can read
  (the channel's Audience). When that is refused but the asker alone could get a supported answer,
  the answer goes to the asker with ``chat.postEphemeral`` and the thread only says so — the
  private answer is never streamed into the channel.
- ``answer_command`` (``/ask``) and ``summarize_command`` (``/summarize``): ephemeral replies
  through the ``response_url``, with the asker's access.
- ``schedule_command`` (``/schedule``): hands the text to ``schedule_command``; ephemeral reply.
- ``record_feedback``: a 👍/👎 click stores (question, answer, sources, vote, user, channel, time).
Follow-ups: earlier question/answer pairs of the thread (``conversations.replies``), or of a DM's
last 15 minutes (``conversations.history``), become ``history``.
Not done: a "weak but not refused" channel answer does not trigger the private fallback — only a
refusal does (a weak answer has no reliable signal yet).
Exactly once: an event is handled only if neither its ``event_id`` nor its message (channel, ts)
was seen before — in memory and in the store table ``slackbot_events`` — so Slack's retries
(``X-Slack-Retry-Num``) and app_mention/message twins never produce a second answer. In the same
transaction the request becomes a row of the durable inbox (``inbox``), deleted when the work is
done; ``recover()`` (run at start-up) finishes what a crashed process left: it finds the reply
already posted (the placeholder's ts is kept in the row, or found in the thread), leaves a final
answer alone, and otherwise answers into that placeholder — or tells the asker, once, when the
question is older than ``slack.recover_within_s`` or has failed ``MAX_ATTEMPTS`` times.
Any exception becomes a friendly message where the user is looking and one log line.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from slack_bolt.context.respond import Respond
from slack_sdk.errors import SlackApiError

from assistant.errors import AssistantError
from assistant.retrieval import Audience
from assistant.settings import is_no_model
from assistant.slackbot import blocks as bk
from assistant.slackbot.inbox import Inbox, Job, Once, is_final, posted_reply
from assistant.slackbot.schedule_command import CHANNEL_REF, handle_schedule_command, scope_from_words
from assistant.slackbot.streaming import Streamer
from assistant.summaries import parse_since

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from assistant.service import Assistant
    from assistant.settings import Settings
    from assistant.slackbot.identity import Identity

log = logging.getLogger(__name__)

_BOT_NOTES = {bk.THINKING, bk.PRIVATE_NOTICE, bk.ERROR_TEXT}
_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_SINCE_WORDS = re.compile(
    r"\s*(?:\b(?:since|last|for the last|over the last)\s+)?(\d+(?:\.\d+)?\s*[smhdw]|\d{4}-\d{2}-\d{2})\s*$",
    re.IGNORECASE,
)

RESTART_TEXT = bk.RESTART_TEXT
MAX_ATTEMPTS = 3  # a question whose answering killed the process twice is not tried a third time
_RESPONSE_URL_S = 1800  # Slack's response_url works for 30 minutes
_JOBS = ("answer_message", "answer_command", "summarize_command", "schedule_command")

HELP_ASK = "Ask me a question, e.g. `/ask how do I request a new laptop?`"
HELP_SUMMARIZE = (
    "Tell me what to summarize, e.g. `/summarize #eng since 7d`, `/summarize gdrive:Security 2w` "
    "or `/summarize handbook`; add `focus …` to steer it (`/summarize #eng focus for new managers`)."
)


def clean_text(text: str, *, bot_user_id: str | None = None) -> str:
    """Slack mrkdwn → the plain question: our mention removed, channel refs and links readable."""
    text = _MENTION.sub(lambda m: "" if bot_user_id and bot_user_id in m.group(0) else m.group(0), text or "")
    text = CHANNEL_REF.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return " ".join(html.unescape(text).split())


class BotCore:
    """The work behind the listeners; owns the worker pool, identity lookups and exactly-once records."""

    def __init__(
        self,
        settings: Settings,
        assistant: Assistant,
        client: WebClient,
        identity: Identity,
        *,
        bot_user_id: str,
        bot_id: str | None = None,
        workers: int = 8,
    ) -> None:
        self.settings, self.assistant, self.client, self.identity = settings, assistant, client, identity
        self.bot_user_id, self.bot_id = bot_user_id, bot_id
        self.store = assistant.engine.store
        self.inbox = Inbox(self.store)
        self.once = Once(self.store, inbox=self.inbox)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slackbot-work")
        self.listener_executor = _TrackedExecutor(self)  # bolt's listeners: counted, so wait_idle sees them
        self._pending = 0
        self._idle = threading.Condition()
        self.stats = {"answered": 0, "private": 0, "errors": 0, "duplicates": 0, "recovered": 0}

    # -- scheduling -----------------------------------------------------------------------------
    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run ``fn`` on the worker pool; exceptions are logged, never raised into bolt."""
        return self._track(self.pool, fn, *args, **kwargs)

    def _track(self, pool: ThreadPoolExecutor, fn, /, *args, **kwargs) -> Future:
        with self._idle:
            self._pending += 1

        def run():
            try:
                return fn(*args, **kwargs)
            except Exception:
                self._count("errors")
                log.exception("slackbot: %s failed", getattr(fn, "__name__", fn))
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

        return pool.submit(run)

    def _count(self, what: str) -> None:
        with self._idle:
            self.stats[what] += 1

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no work is queued or running (tests, benchmarks, shutdown)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self.listener_executor.shutdown(wait=True)
        self.pool.shutdown(wait=True, cancel_futures=False)

    def first_time(self, *keys: str, job: Job | None = None) -> bool:
        if self.once.first(*keys, job=job):
            return True
        self._count("duplicates")
        log.info("slackbot: duplicate delivery %s ignored", ", ".join(k for k in keys if k))
        return False

    # -- accepted work: recorded, run, finished; recovered after a crash ------------------------
    def accept(self, keys: tuple[str, ...], kind: str, /, **args) -> bool:
        """Record the delivery (``keys``) and the job in one transaction and run it; False for a duplicate.
        ``args`` must be JSON: a command passes ``response_url``, not bolt's ``respond``."""
        if kind not in _JOBS:
            raise ValueError(f"unknown bot job {kind!r}; one of {_JOBS}")
        key = next(k for k in keys if k)
        job = Job(key, kind, args, time.time())
        if not self.first_time(*keys, job=job):
            return False
        self.submit(self._run_job, job)
        return True

    def _run_job(self, job: Job) -> None:
        args = dict(job.args)
        if "response_url" in args:
            args["respond"] = Respond(response_url=args.pop("response_url"))
        if job.kind == "answer_message":
            args.update(job=job.key, placeholder=job.reply_ts)
        try:
            getattr(self, job.kind)(**args)
        finally:
            self.inbox.finish(job.key)

    def recover(self) -> int:
        """Take the jobs a dead process left in the inbox and finish each exactly once (on the pool)."""
        jobs = self.inbox.take_orphans()
        for job in jobs:
            log.warning(
                "slackbot: finishing a %s left unfinished by a stopped process (attempt %d)",
                job.kind,
                job.attempts,
            )
            self.submit(self._recover_one, job)
        return len(jobs)

    def _recover_one(self, job: Job) -> None:
        give_up = (
            time.time() - job.created > self.settings.slack.recover_within_s or job.attempts > MAX_ATTEMPTS
        )
        if job.kind != "answer_message":
            if time.time() - job.created > _RESPONSE_URL_S:  # nothing can reach the asker any more
                log.warning(
                    "slackbot: a %s from %s could not be finished (its response_url expired)",
                    job.kind,
                    job.args.get("user"),
                )
                self.inbox.finish(job.key)
            elif give_up:
                Respond(response_url=job.args["response_url"])(
                    response_type="ephemeral", replace_original=False, **bk.notice_message(RESTART_TEXT)
                )
                self.inbox.finish(job.key)
            else:
                self._run_job(job)
            self._count("recovered")
            return
        a = job.args
        reply = posted_reply(
            self.client,
            a["channel"],
            a["ts"],
            thread_ts=a.get("thread_ts"),
            is_dm=a.get("is_dm", False),
            known_ts=job.reply_ts,
            bot_user_id=self.bot_user_id,
        )
        if reply is not None and is_final(reply):
            self.inbox.finish(job.key)  # answered before the crash; only the row was left
        elif give_up:
            notice = bk.notice_message(RESTART_TEXT)
            if reply is not None:
                self.client.chat_update(channel=a["channel"], ts=reply["ts"], **notice)
            else:
                self.client.chat_postMessage(
                    channel=a["channel"],
                    thread_ts=a.get("thread_ts") or (None if a.get("is_dm") else a["ts"]),
                    **notice,
                )
            self.inbox.finish(job.key)
        else:
            self._run_job(
                Job(job.key, job.kind, a, job.created, job.attempts, reply["ts"] if reply else None)
            )
        self._count("recovered")

    # -- questions in channels and DMs ----------------------------------------------------------
    def answer_message(
        self,
        *,
        channel: str,
        user: str,
        text: str,
        ts: str,
        thread_ts: str | None = None,
        is_dm: bool = False,
        job: str | None = None,
        placeholder: str | None = None,
    ) -> None:
        """``job``: the inbox row to note the placeholder in; ``placeholder``: a reply already posted (recovery)."""
        question = clean_text(text, bot_user_id=self.bot_user_id)
        reply_ts = thread_ts or (None if is_dm else ts)
        if not question:
            self.client.chat_postMessage(channel=channel, thread_ts=reply_ts, **bk.notice_message(HELP_ASK))
            return
        try:
            if placeholder is None:
                placeholder = self.client.chat_postMessage(
                    channel=channel, thread_ts=reply_ts, **bk.thinking_message()
                )["ts"]
                if job:
                    self.inbox.note_reply(job, placeholder)
            history = self._history(
                channel, thread_ts or ts, before=ts, threaded=bool(thread_ts), is_dm=is_dm
            )
            asker = self.identity.principals(user)
            who = asker if is_dm else self._audience_with(self.identity.channel_audience(channel), asker)
            stream = Streamer(self.client, channel, placeholder, every_s=self.settings.slack.stream_every_s)
            ans = self.assistant.ask(question, who=who, history=history, on_delta=stream)
            if not is_dm and ans.refused:
                private = self.assistant.ask(question, who=asker, history=history)
                if not private.refused:
                    token = self._remember(private, channel=channel, user=user)
                    self.client.chat_postEphemeral(
                        channel=channel,
                        user=user,
                        thread_ts=thread_ts or ts,
                        **bk.answer_message(
                            private, feedback_token=token, note="Only you can see this answer."
                        ),
                    )
                    self.client.chat_update(
                        channel=channel, ts=placeholder, **bk.notice_message(bk.PRIVATE_NOTICE)
                    )
                    self._count("private")
                    return
            token = self._remember(ans, channel=channel, user=user)
            self.client.chat_update(
                channel=channel, ts=placeholder, **bk.answer_message(ans, feedback_token=token)
            )
            self._count("answered")
        except Exception:
            self._count("errors")
            log.exception("slackbot: answering in %s failed (question %r)", channel, question[:200])
            self._say_sorry(channel, placeholder, reply_ts)

    @staticmethod
    def _audience_with(channel: Audience, asker) -> Audience:
        # the asker is a member; adding them again only guards against a stale member list
        return channel if asker in channel.members else Audience(channel.members + (asker,))

    def _say_sorry(self, channel: str, placeholder: str | None, thread_ts: str | None) -> None:
        if placeholder:
            try:
                self.client.chat_update(channel=channel, ts=placeholder, **bk.notice_message(bk.ERROR_TEXT))
                return
            except Exception as e:  # noqa: BLE001 - any failure: try posting instead
                log.warning(
                    "slackbot: could not replace the placeholder with the apology (%s); posting it", e
                )
        try:
            self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, **bk.notice_message(bk.ERROR_TEXT)
            )
        except Exception as e:  # noqa: BLE001 - nothing left to try but the log
            log.error("slackbot: could not tell %s about the failure either: %s", channel, e)

    def _history(
        self, channel: str, root_ts: str, *, before: str, threaded: bool, is_dm: bool
    ) -> list[tuple[str, str]]:
        """Earlier (question, answer) pairs: the thread, or a DM's last few minutes."""
        try:
            if threaded:
                msgs = (
                    self.client.conversations_replies(channel=channel, ts=root_ts, limit=200).get("messages")
                    or []
                )
            elif is_dm:
                resp = self.client.conversations_history(
                    channel=channel, limit=12, oldest=f"{time.time() - 900:.6f}"
                )
                msgs = sorted(resp.get("messages") or [], key=lambda m: float(m["ts"]))
            else:
                return []
        except Exception as e:  # noqa: BLE001 - context is optional
            log.warning("slackbot: could not read the conversation for context (%s); answering without it", e)
            return []
        pairs: list[tuple[str, str]] = []
        question: str | None = None
        for m in msgs:
            if float(m.get("ts", 0)) >= float(before):
                break
            if m.get("user") == self.bot_user_id or (self.bot_id and m.get("bot_id") == self.bot_id):
                answer = html.unescape(m.get("text") or "")
                if question and answer and answer not in _BOT_NOTES and not answer.startswith(bk.THINKING):
                    pairs.append((question, answer[:600]))
                question = None
            elif not m.get("bot_id") and not m.get("subtype"):
                question = clean_text(m.get("text") or "", bot_user_id=self.bot_user_id) or question
        return pairs[-3:]

    # -- slash commands -------------------------------------------------------------------------
    def answer_command(self, *, text: str, user: str, channel: str, respond) -> None:
        question = clean_text(text, bot_user_id=self.bot_user_id)
        if not question:
            respond(response_type="ephemeral", **bk.notice_message(HELP_ASK))
            return
        try:
            ans = self.assistant.ask(question, who=self.identity.principals(user))
            token = self._remember(ans, channel=channel, user=user)
            respond(
                response_type="ephemeral",
                replace_original=False,
                **bk.answer_message(ans, feedback_token=token),
            )
            self._count("answered")
        except Exception:
            self._count("errors")
            log.exception("slackbot: /ask failed (question %r)", question[:200])
            respond(response_type="ephemeral", **bk.notice_message(bk.ERROR_TEXT))

    def summarize_command(self, *, text: str, user: str, channel: str, respond) -> None:
        text, _, focus = (text or "").partition(
            " focus "
        )  # '/summarize #eng since 7d focus for new managers'
        try:
            scope, since = self.parse_summary_request(text)
        except (AssistantError, SlackApiError) as e:
            respond(response_type="ephemeral", **bk.notice_message(f"{e} {HELP_SUMMARIZE}"))
            return
        if not scope:
            respond(response_type="ephemeral", **bk.notice_message(HELP_SUMMARIZE))
            return
        try:
            summary = self.assistant.summarize(
                who=self.identity.principals(user),
                scope=scope,
                since=since,
                use_llm=not is_no_model(self.assistant.settings.llm.model),
                **({"focus": focus.strip()} if focus.strip() else {}),
            )
            respond(response_type="ephemeral", replace_original=False, **bk.summary_message(summary))
        except Exception:
            self._count("errors")
            log.exception("slackbot: /summarize %r failed", text[:200])
            respond(response_type="ephemeral", **bk.notice_message(bk.ERROR_TEXT))

    def parse_summary_request(self, text: str) -> tuple[str | None, float | None]:
        """'<#C1|eng> since 7d' → ('slack:#eng', t); 'drive:Security 2w' → ('gdrive:Security', t)."""
        text = (text or "").strip()
        since = None
        m = _SINCE_WORDS.search(text)
        if m:
            since = parse_since(m.group(1).replace(" ", ""))
            text = text[: m.start()].strip()
        return scope_from_words(text, channel_name=self._channel_name), since

    def schedule_command(self, *, text: str, user: str, channel: str, respond) -> None:
        """``/schedule …`` (``schedule_command.handle_schedule_command``); the reply is private."""
        try:
            reply = handle_schedule_command(
                text,
                channel_id=channel,
                user_id=user,
                store=self.store,
                tz=self.settings.scheduler.timezone,
                channel_name=self._channel_name,
            )
        except Exception:
            self._count("errors")
            log.exception("slackbot: /schedule %r failed", (text or "")[:200])
            reply = bk.ERROR_TEXT
        respond(response_type="ephemeral", replace_original=False, **bk.notice_message(reply))

    def _channel_name(self, channel_id: str) -> str:
        return self.client.conversations_info(channel=channel_id)["channel"]["name"]

    # -- feedback -------------------------------------------------------------------------------
    def _remember(self, ans, *, channel: str | None, user: str | None) -> str:
        token = uuid.uuid4().hex
        sources = [c.as_json() for c in ans.citations]
        self.store.add_bot_answer(
            token,
            question=ans.question,
            answer=ans.answer,
            sources=json.dumps(sources),
            channel=channel,
            user=user,
        )
        return token

    def record_feedback(self, *, token: str, vote: int, user: str, channel: str | None, respond=None) -> bool:
        """Store one vote per (answer, person); a changed vote is stored as a new row. True when stored."""
        row = self.store.bot_answer(token)
        if row is None:
            if respond:
                respond(
                    response_type="ephemeral",
                    replace_original=False,
                    **bk.notice_message("I no longer have this answer, so I could not record your vote."),
                )
            return False
        question, answer, sources, answer_channel = row
        changed = self.store.record_vote(token, user, vote)
        if changed:
            who = self.identity.principals(user)
            self.store.add_feedback(
                question=question,
                answer=answer,
                sources=json.loads(sources),
                vote=vote,
                user=who.email or user,
                channel=channel or answer_channel,
            )
        if respond:
            respond(
                response_type="ephemeral",
                replace_original=False,
                **bk.notice_message(
                    "Thanks — your feedback was recorded." if changed else "You already voted that way."
                ),
            )
        return bool(changed)


class _TrackedExecutor(ThreadPoolExecutor):
    """bolt's listener executor: tasks count as pending work of the core (listeners only parse and enqueue)."""

    def __init__(self, core: BotCore) -> None:
        super().__init__(max_workers=8, thread_name_prefix="slackbot-listener")
        self._core = core

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._core._track(super(), fn, *args, **kwargs)
