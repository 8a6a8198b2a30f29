"""faust's Kafka producer with idempotence on (faust turns it on only inside transactions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer


class IdempotentProducer(Producer):
    """acks=all and idempotence: a broker failover neither loses nor duplicates a write."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def use_idempotent_producer(app: faust.App) -> None:
    """Make every producer the app's transport creates an IdempotentProducer."""
    # faust builds its producer from the transport's `Producer` class attribute.
    app.transport.Producer = IdempotentProducer  # type: ignore[misc]
