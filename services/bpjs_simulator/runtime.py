"""The simulator's live parts in one object: settings, options, state, faults, request log."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from services.bpjs_simulator.config import RuntimeOptions, SimulatorSettings
from services.bpjs_simulator.faults import FaultBook
from services.bpjs_simulator.state import SimState
from shared.bpjs.credentials import BpjsCredentials

# Header values the request log never keeps: they are, or are derived from, secrets.
REDACTED_HEADERS = frozenset({"x-signature", "user_key", "authorization", "cookie"})
REDACTED = "***"
_BODY_LIMIT = 4000


@dataclass
class LoggedRequest:
    id: int
    at: str
    method: str
    path: str
    route: str
    headers: dict[str, str]
    body: str
    reply_status: int | None = None  # None: no complete reply went out (hang, dropped)
    reply_body: str | None = None
    note: str | None = None  # fault applied or why authentication failed


class RequestLog:
    def __init__(self, size: int) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=size)
        self._ids = itertools.count(1)

    def clear(self) -> None:
        self._entries.clear()

    def start(
        self, method: str, path: str, route: str, headers: dict[str, str], body: bytes
    ) -> LoggedRequest:
        """Record the request at once, so a call that hangs is visible while it hangs."""
        entry = LoggedRequest(
            id=next(self._ids),
            at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            method=method,
            path=path,
            route=route,
            headers={
                k: REDACTED if k.lower() in REDACTED_HEADERS else v for k, v in headers.items()
            },
            body=body.decode("utf-8", errors="replace")[:_BODY_LIMIT],
        )
        self._entries.append(entry)
        return entry

    def view(self, route: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        chosen = [asdict(e) for e in self._entries if route is None or e.route == route]
        return chosen[-limit:] if limit else chosen


def configured_credentials(settings: SimulatorSettings) -> BpjsCredentials:
    return BpjsCredentials(settings.cons_id, settings.secret_key, settings.user_key)


class Simulator:
    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.options = RuntimeOptions.from_settings(settings)
        # What the gateway accepts now; the control API may rotate it, reset restores it.
        self.credentials = configured_credentials(settings)
        self.state = SimState()
        self.faults = FaultBook(settings.fault_seed)
        self.log = RequestLog(settings.request_log_size)

    def reset(self) -> None:
        self.options = RuntimeOptions.from_settings(self.settings)
        self.credentials = configured_credentials(self.settings)
        self.state = SimState()
        self.faults.reset()
        self.log.clear()
