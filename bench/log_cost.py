"""`python -m bench.log_cost`: CPU time of one JSON log line through the services' pipeline
(`shared.logging`: context variables, trace ids, redaction, rendering, the stdlib handler),
written to /dev/null. The line is the notifier's per-event `event_pushed`."""

from __future__ import annotations

import os
import time

import structlog

from shared.logging import configure_logging, get_logger

LINES = 20_000


def main() -> None:
    with open(os.devnull, "w") as sink:
        configure_logging("bench", "INFO", json=True, stream=sink)
        log = get_logger("bench.log_cost")
        started = time.process_time()
        for i in range(LINES):
            with structlog.contextvars.bound_contextvars(queue_id=i):
                log.info(
                    "event_pushed",
                    type="queue.cancelled",
                    event_id="3f1c2d4e-1111-2222-3333-444455556666",
                    sessions=500,
                )
        took = time.process_time() - started
    print(f"{took / LINES * 1e6:.1f} us of CPU per log line ({LINES} lines)")


if __name__ == "__main__":
    main()
