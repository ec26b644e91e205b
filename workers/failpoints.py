"""Failpoints for fault tests: `STILLHOUSE_FAILPOINTS="export=5,nightly:evaluation=3"`
makes a worker pause that many seconds at the start of a stage (of every job,
or only of the job named before the colon), so a test can cancel, kill or
freeze it while a stage that is otherwise too short to hit is running;
`epoch=SECONDS` pauses training that long at the end of every epoch. The
pause is cooperative: a cancel or a lost lease ends it within a tenth of a
second. `inspect_dataset=SECONDS` pauses a dataset's inspection (its claim
stays renewed meanwhile) and `inspect_dataset=kill` makes the worker SIGKILL
itself mid-inspection, as a file that exhausts its memory would. Empty (the
default) in production: nothing pauses."""

from __future__ import annotations

import logging

from core.lifecycle import Claim
from workers.jobs import StopCheck

log = logging.getLogger("stillhouse.worker")


def parse(spec: str) -> dict[tuple[str | None, str], float]:
    """{(job name or None, stage): seconds}"""
    points: dict[tuple[str | None, str], float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, _, seconds = part.partition("=")
        job, _, stage = target.strip().rpartition(":")
        try:
            points[(job or None, stage)] = float(seconds)
        except ValueError:
            continue  # not a pause (`inspect_dataset=kill`)
    return points


def _seconds(spec: str, claim: Claim, point: str) -> float:
    points = parse(spec) if spec else {}
    return points.get((claim.job_name, point), points.get((None, point), 0.0))


def failpoint(spec: str, claim: Claim, check: StopCheck) -> None:
    seconds = _seconds(spec, claim, claim.stage)
    if seconds > 0:
        log.warning("failpoint: pausing %.1f s at the start of stage %s", seconds, claim.stage)
        check.pause(seconds)


def epoch_pause(spec: str, claim: Claim) -> float:
    """Seconds `epoch=SECONDS` (or `job:epoch=SECONDS`) pauses training at each epoch's
    end, so a fault test's kill lands mid-training however fast this machine trains."""
    return _seconds(spec, claim, "epoch")


def inspection_failpoint(spec: str, task: str) -> tuple[float, bool]:
    """(seconds the inspector pauses before reading, whether the worker then kills itself)
    for `inspect_dataset=SECONDS` or `inspect_dataset=kill` (a file that kills its worker)."""
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, _, value = part.partition("=")
        if target.strip() == task:
            kill = value.strip() == "kill"
            return (60.0 if kill else float(value)), kill
    return 0.0, False
