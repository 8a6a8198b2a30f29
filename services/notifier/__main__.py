"""`python -m services.notifier`: serve the websocket notifier until SIGTERM/SIGINT."""

import asyncio

import uvloop

from services.notifier.app import Notifier
from services.notifier.config import NotifierSettings
from shared import tracing
from shared.config import load_settings
from shared.logging import configure_logging, get_logger
from shared.service_kit import stop_on_signals

log = get_logger("services.notifier")


async def serve(settings: NotifierSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with Notifier(settings).serving():
        log.info("notifier_listening", host=settings.http_host, port=settings.port)
        await stop.wait()
        log.info("notifier_stopping")


def main() -> None:
    settings = load_settings(NotifierSettings.from_env, "notifier")  # production refuses bad ones
    configure_logging("notifier", settings.log_level)
    tracing.configure("notifier")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
