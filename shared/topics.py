"""`python -m shared.topics`: create the contract's Kafka topics (idempotent)."""

import asyncio
from typing import ClassVar

from shared.config import BaseServiceSettings, load_settings
from shared.events import TOPIC_BPJS_SYNC_FAILED, TOPIC_BPJS_SYNCED, TOPIC_QUEUE_CANCELLED
from shared.kafka import ensure_topics


class TopicSettings(BaseServiceSettings):
    uses_database: ClassVar[bool] = False
    uses_auth: ClassVar[bool] = False


def main() -> None:
    s = load_settings(TopicSettings, "topics")
    names = [s.topic(t) for t in (TOPIC_QUEUE_CANCELLED, TOPIC_BPJS_SYNCED, TOPIC_BPJS_SYNC_FAILED)]
    asyncio.run(ensure_topics(s.kafka_bootstrap_servers, names))
    print("kafka topics ready: " + ", ".join(names))


if __name__ == "__main__":
    main()
