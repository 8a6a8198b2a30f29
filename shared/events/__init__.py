"""Wire contracts: the CloudEvents envelope and the three event models (docs/EVENTS.md)."""

from shared.events.envelope import CloudEvent, decode_event, encode_event, new_event
from shared.events.models import (
    EVENT_TYPES,
    TOPIC_BPJS_SYNC_FAILED,
    TOPIC_BPJS_SYNCED,
    TOPIC_QUEUE_CANCELLED,
    BpjsSyncedData,
    BpjsSyncFailedData,
    CancelledBy,
    QueueCancelledData,
)

__all__ = [
    "EVENT_TYPES",
    "TOPIC_BPJS_SYNCED",
    "TOPIC_BPJS_SYNC_FAILED",
    "TOPIC_QUEUE_CANCELLED",
    "BpjsSyncFailedData",
    "BpjsSyncedData",
    "CancelledBy",
    "CloudEvent",
    "QueueCancelledData",
    "decode_event",
    "encode_event",
    "new_event",
]
