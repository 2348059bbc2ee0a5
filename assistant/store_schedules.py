"""The scheduler's rows in the store (a mixin of ``Store``): schedules and their per-period runs, claimed
with a UNIQUE insert as the lock and a lease that a successor may take over.

It relies on ``Store``'s ``transaction``/``execute``.
"""

from __future__ import annotations


class ScheduleRows:
    """Mixed into ``Store`` (``assistant.reports.scheduler`` is the caller)."""

    # -- schedules (assistant.reports.scheduler) ----------------------------------------------------
    _SCHEDULE_COLS = "id, spec, kind, expr, tz, scope, channel, empty, created_by, origin_channel, created_at"
    _RUN_COLS = (
        "id",
        "kind",
        "period_start",
        "period_end",
        "run_key",
        "status",
        "attempts",
        "channel",
        "ts",
        "error",
    )

    def add_schedule_row(
        self,
        *,
        spec: str,
        kind: str,
        expr: str,
        tz: str,
        scope: str | None,
        channel: str,
        empty: str,
        created_by: str | None,
        origin_channel: str | None,
        created_at: float,
    ) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO schedules (spec, kind, expr, tz, scope, channel, empty, created_by, "
                "origin_channel, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (spec, kind, expr, tz, scope, channel, empty, created_by, origin_channel, created_at),
            ).lastrowid

    def schedule_rows(self, schedule_id: int | None = None) -> list[tuple]:
        """Rows in ``_SCHEDULE_COLS`` order: one schedule, or all by id."""
        if schedule_id is None:
            return self.execute(f"SELECT {self._SCHEDULE_COLS} FROM schedules ORDER BY id")
        return self.execute(f"SELECT {self._SCHEDULE_COLS} FROM schedules WHERE id=?", (int(schedule_id),))

    def delete_schedule(self, schedule_id: int) -> bool:
        with self.transaction() as db:
            gone = db.execute("DELETE FROM schedules WHERE id=?", (int(schedule_id),)).rowcount
            db.execute("DELETE FROM schedule_runs WHERE schedule_id=?", (int(schedule_id),))
        return bool(gone)

    def schedule_runs(self, schedule_id: int) -> list[dict]:
        rows = self.execute(
            f"SELECT {', '.join(self._RUN_COLS)} FROM schedule_runs WHERE schedule_id=? ORDER BY period_end",
            (int(schedule_id),),
        )
        return [dict(zip(self._RUN_COLS, r)) for r in rows]

    def schedule_run_state(
        self, schedule_id: int, kind: str, period_start: float
    ) -> tuple[str, float] | None:
        """(status, lease_until) of a period's run, or None when nobody claimed it yet."""
        rows = self.execute(
            "SELECT status, lease_until FROM schedule_runs WHERE schedule_id=? AND kind=? AND period_start=?",
            (schedule_id, kind, period_start),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def claim_schedule_run(
        self,
        schedule_id: int,
        kind: str,
        period_start: float,
        period_end: float,
        *,
        run_key: str,
        owner: str,
        lease_until: float,
        now: float,
    ) -> tuple[int, int, int] | None:
        """Claim a period's run (the UNIQUE insert is the lock), or take over a claim whose lease ran out
        and that never finished. Returns (run id, attempts, errors), or None when someone else holds it."""
        with self.transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO schedule_runs (schedule_id, kind, period_start, period_end, run_key, status, "
                "owner, lease_until, claimed_at) VALUES (?,?,?,?,?,'claimed',?,?,?)",
                (schedule_id, kind, period_start, period_end, run_key, owner, lease_until, now),
            ).rowcount
            if not inserted:
                taken = db.execute(
                    "UPDATE schedule_runs SET owner=?, lease_until=? WHERE schedule_id=? AND kind=? AND period_start=? "
                    "AND status='claimed' AND lease_until <= ?",
                    (owner, lease_until, schedule_id, kind, period_start, now),
                ).rowcount
                if not taken:
                    return None
            return db.execute(
                "SELECT id, attempts, errors FROM schedule_runs WHERE schedule_id=? AND kind=? "
                "AND period_start=?",
                (schedule_id, kind, period_start),
            ).fetchone()

    def count_schedule_attempt(self, run_id: int, *, owner: str, lease_until: float) -> bool:
        """Count a post attempt and renew the lease; False when ``owner`` no longer holds the claim."""
        with self.transaction() as db:
            return bool(
                db.execute(
                    "UPDATE schedule_runs SET attempts=attempts+1, lease_until=? WHERE id=? AND owner=? "
                    "AND status='claimed'",
                    (lease_until, run_id, owner),
                ).rowcount
            )

    def fail_schedule_run(
        self, run_id: int, *, owner: str, final: bool, retry_at: float, error: str, now: float
    ) -> None:
        """Record a failed attempt: 'failed' for good when ``final``, else claimable again at ``retry_at``."""
        with self.transaction() as db:
            db.execute(
                "UPDATE schedule_runs SET status=?, lease_until=?, errors=errors+1, error=?, finished_at=? "
                "WHERE id=? AND owner=?",
                (
                    "failed" if final else "claimed",
                    retry_at,
                    error[:500],
                    now if final else None,
                    run_id,
                    owner,
                ),
            )

    def finish_schedule_run(
        self, run_id: int, status: str, *, channel: str | None, ts: str | None, error: str | None, now: float
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE schedule_runs SET status=?, channel=?, ts=?, error=?, finished_at=? WHERE id=?",
                (status, channel, ts, error, now, run_id),
            )
