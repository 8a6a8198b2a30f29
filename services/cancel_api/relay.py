"""`python -m services.cancel_api.relay`: run the outbox relay alone (outside the API process)."""

import asyncio
from typing import ClassVar

from services.cancel_api.config import CancelApiSettings
from shared import tracing
from shared.config import load_settings
from shared.db import close_pool, create_pool
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.kafka import KafkaConfig
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.service_kit import stop_on_signals

log = get_logger(__name__)


class RelaySettings(CancelApiSettings):
    uses_auth: ClassVar[bool] = False  # publishes rows only: no staff tokens to verify


async def run(settings: CancelApiSettings) -> None:
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=4)
    topics = [settings.topic(TOPIC_QUEUE_CANCELLED)]
    relay = OutboxRelay(
        pool,
        KafkaConfig.from_settings(settings),
        topics=topics,
        max_attempts=settings.outbox_max_attempts,
    )
    stop = asyncio.Event()
    stop_on_signals(stop)
    task = asyncio.create_task(relay.run())
    log.info("outbox_relay_started")
    await stop.wait()
    relay.stop()
    await task
    await close_pool(pool)


if __name__ == "__main__":
    relay_settings = load_settings(RelaySettings, "outbox-relay")  # production refuses bad ones
    configure_logging("outbox-relay", relay_settings.log_level)
    tracing.configure("outbox-relay")
    asyncio.run(run(relay_settings))
