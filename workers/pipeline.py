"""One task runs any stage of a job: claim it, run it, and turn whatever goes
wrong into a job status with a sentence. The stage functions hand the job on."""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.queues import JobStatus, Stage, TaskName
from distill.errors import DistillError
from workers.context import WorkerContext, context
from workers.jobs import CancelCheck, ClaimedJob, JobCancelled, claim, finish
from workers.stages.teacher import run_teacher_inference
from workers.stages.training import run_training
from workers.task import TRANSIENT, stillhouse_task

log = logging.getLogger("stillhouse.worker")

StageFn = Callable[[WorkerContext, ClaimedJob, CancelCheck], None]
STAGES: dict[str, StageFn] = {
    Stage.TEACHER_INFERENCE.value: run_teacher_inference,
    Stage.TRAINING.value: run_training,
}


@stillhouse_task(TaskName.RUN_STAGE, max_retries=2)
def run_stage(job_id: str, stage: str) -> None:
    ctx = context()
    run = STAGES.get(stage)
    if run is None:
        log.error("job %s: unknown stage %r; message dropped", job_id, stage)
        return
    job = claim(ctx, job_id, stage)
    if job is None:
        log.info("job %s: stage %s already claimed, finished or cancelled", job_id, stage)
        return
    ctx.current_job_id = job_id
    try:
        run(ctx, job, CancelCheck(ctx, job_id))
    except JobCancelled:
        finish(ctx, job_id, JobStatus.CANCELLED)
    except DistillError as exc:
        finish(ctx, job_id, JobStatus.FAILED, error=str(exc))
    except MemoryError:
        finish(
            ctx,
            job_id,
            JobStatus.FAILED,
            error=(
                f"The worker ran out of memory in stage {stage}; use a smaller batch size or "
                "student, or place the stage on a pool with more memory."
            ),
        )
    except TRANSIENT:
        raise  # the database or broker blinked: the reaper re-queues the stage
    except Exception as exc:
        log.exception("job %s: stage %s failed", job_id, stage)
        finish(
            ctx,
            job_id,
            JobStatus.FAILED,
            error=(
                f"Stillhouse hit an internal error in stage {stage} ({type(exc).__name__}: {exc}); "
                "it has been logged."
            ),
        )
    finally:
        ctx.current_job_id = None
