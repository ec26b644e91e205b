"""The end of a `bench/chaos.py` run: the figures the database gives, as a table, and the
evidence for every anomaly (see that script's docstring)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.chaos_stack import FINISHED, Database, Fault, Fleet, Plan


def unfinished_stages(db: Database) -> list[tuple[Any, ...]]:
    """The stages of every job not finished yet, taken at the deadline (before the workers
    are stopped) for the evidence."""
    return db.rows(
        "SELECT j.id, j.name, j.status, j.stage, j.epoch, s.name, s.status, s.attempts,"
        " s.worker_id, s.queued_at, s.heartbeat_at, s.resumed_from_epoch"
        " FROM jobs j JOIN job_stages s ON s.job_id = j.id"
        " WHERE j.status NOT IN ('succeeded', 'failed', 'cancelled')"
        " ORDER BY j.name, s.position"
    )


@dataclass
class Report:
    """What a run leaves for its verdict. `show()` prints it and returns the exit status;
    `anomalies` says whether the folder with the worker logs is worth keeping."""

    db: Database
    fleet: Fleet | None
    plans: list[Plan]
    faults: list[Fault]
    unfinished_snapshot: list[tuple[Any, ...]]  # jobs unfinished at the deadline, per stage
    folder: Path
    started: float  # monotonic
    seed: int
    job_count: int  # as asked for
    worker_count: int
    anomalies: bool = field(default=False, init=False)  # set once any is found

    def show(self) -> int:
        jobs = self.db.rows(
            "SELECT id, name, status, error, (spec->'training'->>'epochs')::int,"
            " (spec->>'baseline')::boolean, student_model_id, cancel_requested FROM jobs"
            " ORDER BY name"
        )
        by_status = Counter(j[2] for j in jobs)
        lost = [j for j in jobs if j[2] not in FINISHED]
        students = dict(
            self.db.rows(
                "SELECT source_job_id, count(*) FROM models WHERE source_job_id IS NOT NULL"
                " GROUP BY 1"
            )
        )
        duplicated = [j for j in jobs if students.get(j[0], 0) > 1]
        # A succeeded job registers exactly one student, the one its row names.
        missing = [
            j for j in jobs if j[2] == "succeeded" and (students.get(j[0], 0) != 1 or not j[6])
        ]
        metric_dups = self.db.rows(
            "SELECT job_id, name, epoch, count(*) FROM metrics GROUP BY 1, 2, 3 HAVING count(*) > 1"
        )
        series: dict[str, dict[str, list[int]]] = {}
        for job_id, name, epochs in self.db.rows(
            "SELECT job_id, name, array_agg(epoch ORDER BY epoch) FROM metrics GROUP BY 1, 2"
        ):
            series.setdefault(job_id, {})[name] = list(epochs)
        bad_series: list[tuple[str, str, str]] = []
        for job_id, name, status, _, epochs, baseline, _, _ in jobs:
            if status != "succeeded":
                continue
            mine = series.get(job_id, {})
            # "loss" is the series the brief names; the others written per epoch must agree.
            expected = {"loss", "val_accuracy"} | ({"baseline/loss"} if baseline else set())
            for metric in sorted(expected | set(mine)):
                if mine.get(metric) != list(range(1, epochs + 1)):
                    points = mine.get(metric)
                    shown = (
                        "none" if points is None else f"{points[:3]}..{points[-3:]} ({len(points)})"
                    )
                    bad_series.append((name, metric, f"expected 1..{epochs}, got {shown}"))
        stages = self.db.rows(
            "SELECT name, coalesce(sum(greatest(attempts - 1, 0)), 0),"
            " count(*) FILTER (WHERE resumed_from_epoch > 0) FROM job_stages GROUP BY 1"
        )
        reruns = {name: int(n) for name, n, _ in stages}
        resumed = sum(int(r) for _, _, r in stages)
        retries = [same for p in self.plans for same in p.retries_same]
        cancels = [p for p in self.plans if p.cancel_status is not None]
        fault_counts = Counter(f.kind for f in self.faults if f.kind != "thaw")
        # How long each stage takes when nothing hits it: the long ones are the likely victims.
        durations = self.db.rows(
            "SELECT name, percentile_cont(0.5) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM finished_at - started_at)), count(*) FROM job_stages"
            " WHERE status = 'succeeded' AND attempts = 1 GROUP BY name, position ORDER BY position"
        )
        acknowledged = sum(p.job_id is not None for p in self.plans)
        latencies = sorted(
            float(s)
            for (s,) in self.db.rows(
                "SELECT extract(epoch FROM finished_at - created_at) FROM jobs"
                " WHERE status = 'succeeded'"
            )
        )
        latency = (
            f"median {latencies[len(latencies) // 2]:.0f} s, max {latencies[-1]:.0f} s"
            if latencies
            else "-"
        )
        wall = time.monotonic() - self.started

        rows = [
            ("jobs submitted", f"{len(jobs)} ({acknowledged} acknowledged by the API)"),
            ("succeeded", by_status["succeeded"]),
            ("failed", by_status["failed"]),
            (
                "cancelled",
                f"{by_status['cancelled']} ({len(cancels)} cancel requests, HTTP "
                f"{dict(Counter(p.cancel_status for p in cancels))})",
            ),
            ("lost (unfinished at the deadline)", len(lost)),
            ("duplicated (>1 student model)", len(duplicated)),
            ("succeeded without exactly one student", len(missing)),
            ("metric duplicates (job, name, epoch)", len(metric_dups)),
            ("succeeded jobs with a series not 1..N", len({b[0] for b in bad_series})),
            ("stage re-runs (sum attempts - 1)", f"{sum(reruns.values())} {reruns}"),
            ("training stages resumed from a checkpoint", resumed),
            ("idempotent retries returning the same job", f"{sum(retries)}/{len(retries)}"),
            ("succeeded jobs, submission to finish", latency),
            (
                "stage median s (runs with 1 attempt)",
                " ".join(f"{name} {float(m):.1f}" for name, m, _ in durations),
            ),
            ("faults", f"{sum(fault_counts.values())} {dict(sorted(fault_counts.items()))}"),
            ("workers started (initial + replacements)", self.fleet.started if self.fleet else 0),
            ("wall time", f"{wall:.0f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + "=" * 78)
        print(f"chaos soak, seed {self.seed}: {self.job_count} jobs, {self.worker_count} workers")
        print("=" * 78)
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
        print("=" * 78)

        rerun = self.db.rows(
            "SELECT j.name, s.name, s.status, s.attempts, s.resumed_from_epoch,"
            " (j.spec->'training'->>'epochs')::int FROM job_stages s JOIN jobs j ON j.id = s.job_id"
            " WHERE s.attempts > 1 ORDER BY j.name, s.position"
        )
        if rerun:
            print("\nre-run stages (job, stage, final status, attempts, resumed from epoch):")
            for job_name, stage, status, attempts, resumed, epochs in rerun:
                where = (
                    f", resumed from epoch {resumed or 0}/{epochs}" if stage == "training" else ""
                )
                print(f"  {job_name} {stage}: {status}, {attempts} attempts{where}")

        failed = [j for j in jobs if j[2] == "failed"]
        if failed:
            print("\nfailed jobs (expected only when a stage's worker died max_attempts times):")
            for job in failed:
                print(f"  {job[1]} {job[0]}: {job[3]}")
        anomalies = bool(lost or duplicated or missing or metric_dups or bad_series)
        anomalies |= not all(retries)
        if anomalies:
            self.anomalies = True
            print("\nANOMALIES")
            for job in lost:
                self.evidence(job[0], job[1], "lost: not finished by the deadline")
            for job in duplicated:
                self.evidence(job[0], job[1], f"duplicated: {students[job[0]]} student models")
            for job in missing:
                self.evidence(job[0], job[1], f"succeeded with {students.get(job[0], 0)} students")
            for job_id, name, epoch, count in metric_dups:
                print(f"  metric duplicate: job {job_id} {name} epoch {epoch}: {count} points")
            for name, metric, detail in bad_series:
                print(f"  series: {name} {metric}: {detail}")
            if not all(retries):
                print(f"  idempotent retries: {retries}")
            print(f"\nlogs kept in {self.folder}")
        return 1 if anomalies else 0

    def evidence(self, job_id: str, name: str, what: str) -> None:
        """Everything needed to tell what happened to one job without rerunning."""
        print(f"\n--- {name} {job_id}: {what}")
        snapshot = [r for r in self.unfinished_snapshot if r[0] == job_id]
        if snapshot:
            print("  at the deadline (before the workers were stopped):")
            for row in snapshot:
                print(
                    f"    job {row[2]}/{row[3]} epoch {row[4]} | stage {row[5]} {row[6]} "
                    f"attempts {row[7]} worker {row[8]} queued {row[9]} heartbeat {row[10]} "
                    f"resumed {row[11]}"
                )
        print("  stages now (after the workers were stopped):")
        columns = (
            "name, status, attempts, worker_id, lease, queued_at, started_at,"
            " heartbeat_at, finished_at, resumed_from_epoch, error"
        )
        labels = [c.strip() for c in columns.split(",")]
        for row in self.db.rows(
            f"SELECT {columns} FROM job_stages WHERE job_id = %s ORDER BY position", job_id
        ):
            shown = [
                f"{label}={value.isoformat() if isinstance(value, datetime) else value}"
                for label, value in zip(labels, row, strict=True)
                if value is not None
            ]
            print(f"    {' '.join(shown)}")
        for row in self.db.rows(
            "SELECT id, created_at, files FROM models WHERE source_job_id = %s", job_id
        ):
            print(f"  student model {row[0]} created {row[1]}")
        last = self.db.rows(
            "SELECT max(greatest(coalesce(heartbeat_at, queued_at), coalesce(finished_at,"
            " queued_at), queued_at)) FROM job_stages WHERE job_id = %s",
            job_id,
        )[0][0]
        if last is not None:
            before = [f for f in self.faults if f.wall <= last][-4:]
            print(f"  last stage activity {last}; the faults just before it:")
            for fault in before:
                print(f"    {fault.wall.isoformat()} {fault.kind}: {fault.detail}")
        print("  worker log lines naming the job:")
        for log in self.fleet.logs() if self.fleet else []:
            lines = [
                line for line in log.read_text(errors="replace").splitlines() if job_id in line
            ]
            for line in lines[-12:]:
                print(f"    {log.name}: {line[:300]}")
