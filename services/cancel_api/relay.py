"""`python -m services.cancel_api.relay`: run the outbox relay alone (outside the API process)."""

import asyncio

from services.cancel_api.config import CancelApiSettings
from shared.db import create_pool
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.service_kit import stop_on_signals

log = get_logger(__name__)


async def run() -> None:
    settings = CancelApiSettings()
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=4)
    relay = OutboxRelay(pool, settings.kafka_bootstrap_servers)
    stop = asyncio.Event()
    stop_on_signals(stop)
    task = asyncio.create_task(relay.run())
    log.info("outbox_relay_started")
    await stop.wait()
    relay.stop()
    await task
    await pool.close()


if __name__ == "__main__":
    configure_logging("outbox-relay")
    asyncio.run(run())
