"""An execution's log and its end: the final status once its last record has ended."""
from __future__ import annotations

from peewee import chunked

from controller.events import execution_event
from controller.models import Execution, LogLine, utcnow


def log(execution_id: int, message: str, level: str = "info") -> None:
    LogLine.create(execution=execution_id, message=message, level=level)


def log_many(execution_id: int, messages: list[str], level: str = "info") -> None:
    now = utcnow()
    rows = [{"execution": execution_id, "at": now, "level": level, "message": m} for m in messages]
    for batch in chunked(rows, 500):
        LogLine.insert_many(batch).execute()


def finish_if_done(execution_id: int) -> bool:
    """End a running execution whose records have all ended; True if this call ended it."""
    ended = Execution.succeeded + Execution.failed + Execution.unverified
    done = (Execution.update(status="success", finished_at=utcnow())
            .where((Execution.id == execution_id) & (Execution.status == "running")
                   & (ended >= Execution.total) & (Execution.failed + Execution.unverified == 0))
            .execute())
    done += (Execution.update(status="failed", finished_at=utcnow())
             .where((Execution.id == execution_id) & (Execution.status == "running")
                    & (ended >= Execution.total))
             .execute())
    if done:
        execution = Execution.get_by_id(execution_id)
        execution_event(execution)
        log(execution_id, f"finished: {execution.status}; success {execution.succeeded}, "
                          f"unverified {execution.unverified}, failed {execution.failed}, "
                          f"total {execution.total}")
    return bool(done)
