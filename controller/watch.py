"""What `--wait` tells an operator when an execution does not move: in embedded mode nothing
dispatches without `keyturn serve`; with a broker nothing settles without `keyturn daemon`
consuming the results. Said once, after a few seconds, instead of waiting an hour silently."""
from __future__ import annotations

from controller.models import Record
from controller.runtime import Controller
from shared.broker import RESULTS_QUEUE, queue_state

STALL_SECONDS = 5.0


def nobody_dispatching(ctl: Controller, execution_id: int) -> str | None:
    """Why the execution's records cannot move now, or None when something serves them."""
    if ctl.settings.embedded:
        moved = Record.select().where((Record.execution == execution_id)
                                      & (Record.status != "pending")).exists()
        return None if moved else (
            "nothing is dispatching its records: in embedded mode `keyturn serve` does (start "
            "it in another terminal; the records wait as pending until then)")
    if results_consumers(ctl) == 0:
        return ("no `keyturn daemon` is consuming the results: start it (the results wait "
                f"in {RESULTS_QUEUE} until then)")
    return None


def results_consumers(ctl: Controller) -> int | None:
    """How many processes consume the results queue (None: the broker did not say)."""
    import pika

    try:
        state = queue_state(ctl.broker, RESULTS_QUEUE)
    except pika.exceptions.AMQPError:
        return None
    return state.consumer_count if state is not None else 0   # never declared: no daemon ran
