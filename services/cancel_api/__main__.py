"""`python -m services.cancel_api`: serve the cancel API (and its outbox relay) with uvicorn."""

import uvicorn

from services.cancel_api.config import CancelApiSettings
from shared.logging import configure_logging


def main() -> None:
    settings = CancelApiSettings()  # refuses to start without secrets outside dev mode
    configure_logging("cancel-api", settings.log_level)
    uvicorn.run(
        "services.cancel_api.app:create_app_from_env",
        factory=True,
        host=settings.http_host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
