"""Stage 3: measure the teacher, the distilled student and the baseline on the
validation set (accuracy, agreement with the teacher, KL to it, calibration),
from the weights the training stage recorded."""

from __future__ import annotations

from core.lifecycle import Claim
from core.queues import Stage
from core.spec import JobCreate
from distill.evaluate import evaluate, predict_logits
from workers.context import WorkerContext
from workers.jobs import StopCheck
from workers.stages.inputs import load_inputs, load_weights, split_data
from workers.stages.result import StageResult


def run_evaluation(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    trained = claim.inputs[Stage.TRAINING.value]
    data = split_data(ctx, claim, load_inputs(ctx, claim.spec))
    x_val, y_val, t_val = data.x_val, data.y_val, data.t_val
    regression = JobCreate.model_validate(claim.spec).task == "regression"
    results: dict[str, dict[str, float] | None] = {"teacher": evaluate(t_val, y_val)}
    for run in ("student", "baseline"):
        entry = trained.get(run)
        if entry is None:
            results[run] = None
            continue
        model, _ = load_weights(ctx, entry["weights"])
        logits = predict_logits(model, x_val, device=ctx.device)  # (M, C)
        results[run] = evaluate(logits, y_val, t_val, regression=regression)
        check.raise_if_stopped()
    return StageResult(
        outputs={**results, "val_source": data.val_source, "val_samples": int(len(x_val))}
    )
