"""`python -m services.cancel_api`: serve the cancel API (and its outbox relay) with uvicorn."""

from typing import Any

import uvicorn

from services.cancel_api.config import CancelApiSettings
from shared.config import load_settings, refuse_to_start
from shared.logging import configure_logging
from shared.service_kit import start_metrics_server

SERVICE = "cancel-api"


def server_options(settings: CancelApiSettings) -> dict[str, Any]:
    """How uvicorn serves the API (everything but the app)."""
    return {
        "host": settings.http_host,
        "port": settings.port,
        "workers": settings.workers,
        # uvloop, but its servers accept every pending connection in one turn (libuv accepts
        # one per turn, so on a busy loop a burst of new connections, and a request the API
        # would refuse at once among them, waits one busy turn each). asyncio's own loop
        # accepts that way too but costs the API more CPU per request (bench/README.md).
        "loop": "shared.eager_accept:EagerAcceptLoop",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }


def main() -> None:
    settings = load_settings(CancelApiSettings, SERVICE)  # production refuses bad settings
    configure_logging(SERVICE, settings.log_level)
    if settings.ops_enabled:
        try:
            start_metrics_server(
                settings.ops_bind_host, settings.ops_port, processes=settings.workers
            )
        except OSError as exc:
            refuse_to_start(SERVICE, f"OPS_PORT {settings.ops_port}: {exc.strerror}")
    uvicorn.run(
        "services.cancel_api.app:create_app_from_env", factory=True, **server_options(settings)
    )


if __name__ == "__main__":
    main()
