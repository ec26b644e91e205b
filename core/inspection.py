"""An upload's inspection as a claim, the way a job stage is held (core.lifecycle):
every change is a conditional UPDATE that names the state it expects, so two
deliveries of one message, two sweepers or a worker that wakes up late can
never both win.

| from    | to                | when                                                   | by       |
|---------|-------------------|--------------------------------------------------------|----------|
| pending | pending (claimed) | unclaimed, or its claim's heartbeat is stale, and      | claim    |
|         |                   | attempts are left: a fresh lease, attempts + 1         |          |
| pending | ready / invalid   | the inspection ended, fenced by the lease              | finish   |
| pending | invalid           | attempts used up and no live claim: the file stopped   | give_up  |
|         |                   | the inspector that many times                          |          |

The claim's heartbeat is renewed while the worker inspects; a worker that
dies stops renewing it, and the sweeper re-sends the upload's message once it
is stale (core.recovery).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from core.models import new_id, utcnow
from core.queues import ResourceStatus

PENDING = ResourceStatus.PENDING.value
TIMES = {1: "once", 2: "twice", 3: "three times"}


@dataclass(frozen=True)
class InspectClaim:
    entity: Any  # Model or Dataset
    row_id: str
    lease: str
    attempts: int


def gave_up_sentence(attempts: int) -> str:
    times = TIMES.get(attempts, f"{attempts} times")
    return (
        f"The inspector stopped {times} while reading this file (it crashed or ran out of "
        "memory); check that the file is what it should be and not larger than it needs to "
        "be, then upload it again, or ask the operator to give the workers more memory."
    )


def claimable(entity: Any, now: datetime, timeout_s: float) -> ColumnElement[bool]:
    """Pending, and nobody holds it: never claimed, or its holder went silent."""
    return and_(
        entity.status == PENDING,
        or_(
            entity.inspect_lease.is_(None),
            entity.inspect_heartbeat_at < now - timedelta(seconds=timeout_s),
        ),
    )


def claim(
    session: Session, entity: Any, row_id: str, timeout_s: float, max_attempts: int
) -> InspectClaim | None:
    """Take the inspection under a fresh lease; None when it is finished, held by a live
    worker (a duplicate delivery) or out of attempts (see give_up)."""
    now, lease = utcnow(), new_id()
    attempts = session.scalar(
        update(entity)
        .where(
            entity.id == row_id,
            claimable(entity, now, timeout_s),
            entity.inspect_attempts < max_attempts,
        )
        .values(
            inspect_lease=lease,
            inspect_attempts=entity.inspect_attempts + 1,
            inspect_heartbeat_at=now,
        )
        .returning(entity.inspect_attempts)
    )
    return None if attempts is None else InspectClaim(entity, row_id, lease, int(attempts))


def _held(claim: InspectClaim) -> ColumnElement[bool]:
    entity = claim.entity
    return and_(
        entity.id == claim.row_id, entity.inspect_lease == claim.lease, entity.status == PENDING
    )


def heartbeat(session: Session, claim: InspectClaim) -> bool:
    """Renew the claim; False: it was taken over (the worker was silent too long) or ended."""
    result = session.execute(
        update(claim.entity).where(_held(claim)).values(inspect_heartbeat_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(session: Session, claim: InspectClaim, **values: Any) -> bool:
    """Record the outcome (status ready or invalid and what was found), only while the
    claim holds; False when it did not (another worker has the file now)."""
    result = session.execute(
        update(claim.entity)
        .where(_held(claim))
        .values(inspect_lease=None, updated_at=utcnow(), **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def give_up(
    session: Session, entity: Any, row_id: str, timeout_s: float, max_attempts: int
) -> bool:
    """Mark invalid a file whose inspection started `max_attempts` times and never
    finished, once no live claim holds it."""
    now = utcnow()
    attempts = session.scalar(
        update(entity)
        .where(
            entity.id == row_id,
            claimable(entity, now, timeout_s),
            entity.inspect_attempts >= max_attempts,
        )
        .values(status=ResourceStatus.INVALID.value, inspect_lease=None, updated_at=now)
        .returning(entity.inspect_attempts)
    )
    if attempts is None:
        return False
    session.execute(
        update(entity).where(entity.id == row_id).values(error=gave_up_sentence(int(attempts)))
    )
    return True


def exhausted(entity: Any, now: datetime, timeout_s: float, max_attempts: int) -> Any:
    """Pending uploads out of attempts with no live claim: for give_up."""
    return (
        select(entity.id)
        .where(claimable(entity, now, timeout_s), entity.inspect_attempts >= max_attempts)
        .limit(100)
    )
