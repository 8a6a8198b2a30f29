"""`python -m services.notifier`: serve the websocket notifier with uvicorn."""

import uvicorn

from services.notifier.config import NotifierSettings
from shared.logging import configure_logging


def main() -> None:
    settings = NotifierSettings.from_env()  # refuses to start without secrets outside dev mode
    configure_logging("notifier", settings.log_level)
    uvicorn.run(
        "services.notifier.app:create_app_from_env",
        factory=True,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
