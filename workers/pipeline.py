"""One task runs any stage of a job: claim it under a lease, run it, and turn
whatever happens into a transition of core.lifecycle with a sentence. The
next stage's message leaves only after the commit that queues it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.lifecycle import Claim, LeaseLost
from core.queues import Stage, TaskName
from core.stages import PIPELINES
from distill.errors import DistillError
from workers import jobs
from workers.context import WorkerContext, context
from workers.failpoints import failpoint
from workers.jobs import JobCancelled, StopCheck
from workers.retry import brief, is_transient
from workers.stages.benchmark import run_benchmark
from workers.stages.evaluation import run_evaluation
from workers.stages.export import run_export
from workers.stages.result import StageResult
from workers.stages.teacher import run_teacher_inference
from workers.stages.training import run_training
from workers.task import TRANSIENT, stillhouse_task

log = logging.getLogger("stillhouse.worker")

StageFn = Callable[[WorkerContext, Claim, StopCheck], StageResult]
RUNNERS: dict[str, StageFn] = {
    Stage.TEACHER_INFERENCE.value: run_teacher_inference,
    Stage.TRAINING.value: run_training,
    Stage.EVALUATION.value: run_evaluation,
    Stage.EXPORT.value: run_export,
    Stage.BENCHMARK.value: run_benchmark,
}
assert set(RUNNERS) == {d.name.value for p in PIPELINES.values() for d in p}, (
    "every stage of every pipeline needs a runner"
)


@stillhouse_task(TaskName.RUN_STAGE, max_retries=2)
def run_stage(job_id: str, stage: str) -> None:
    ctx = context()
    run = RUNNERS.get(stage)
    if run is None:
        log.error("job %s: unknown stage %r; message dropped", job_id, stage)
        return
    claim = jobs.claim(ctx, job_id, stage)
    if claim is None:
        log.info("job %s: stage %s is not waiting (done, held or cancelled)", job_id, stage)
        return
    ctx.lease_lost.clear()
    ctx.claim = claim
    try:
        _run(ctx, claim, run)
    finally:
        ctx.claim = None


def _run(ctx: WorkerContext, claim: Claim, run: StageFn) -> None:
    check = StopCheck(ctx, claim)
    stage = claim.stage
    try:
        failpoint(ctx.settings.failpoints, claim, check)
        result = run(ctx, claim, check)
        jobs.complete(ctx, claim, result.outputs, result.student, result.summary)
    except LeaseLost as exc:
        # Another worker holds the stage now (this one was silent past the timeout),
        # or the job ended: write nothing more for it.
        log.warning("job %s: stopping stage %s without writing: %s", claim.job_id, stage, exc)
    except JobCancelled:
        _settle(ctx, claim, lambda: jobs.cancel(ctx, claim))
    except DistillError as exc:
        sentence = str(exc)
        _settle(ctx, claim, lambda: jobs.fail(ctx, claim, sentence))
    except MemoryError:
        error = (
            f"The worker ran out of memory in stage {stage}; use a smaller batch size or "
            "student, or place the stage on a pool with more memory."
        )
        _settle(ctx, claim, lambda: jobs.fail(ctx, claim, error))
    except TRANSIENT as exc:
        _let_go(ctx, claim, exc)
    except Exception as exc:
        if is_transient(exc):  # a driver error that cut the connection, by another name
            _let_go(ctx, claim, exc)
            return
        log.exception("job %s: stage %s failed", claim.job_id, stage)
        error = (
            f"Stillhouse hit an internal error in stage {stage} ({type(exc).__name__}: {exc}); "
            "it has been logged."
        )
        _settle(ctx, claim, lambda: jobs.fail(ctx, claim, error))


def _let_go(ctx: WorkerContext, claim: Claim, exc: Exception) -> None:
    """The database stayed away past `db_retry_s` (shorter blips were retried in
    place, keeping the claim). Let the stage go, so the reaper re-queues it at
    its next pass; if the database is still away, the stage's heartbeat stops
    with this task and the reaper takes it back after the timeout. Not raised:
    Celery's retry would only race the reaper."""
    log.error("job %s: stage %s gave up on the database: %s", claim.job_id, claim.stage, brief(exc))
    try:
        jobs.release(ctx, claim)
    except Exception as again:
        log.warning(
            "job %s: could not let stage %s go (%s)", claim.job_id, claim.stage, brief(again)
        )


def _settle(ctx: WorkerContext, claim: Claim, end: Callable[[], None]) -> None:
    try:
        end()
    except LeaseLost as exc:
        log.warning("job %s: not ending stage %s: %s", claim.job_id, claim.stage, exc)
