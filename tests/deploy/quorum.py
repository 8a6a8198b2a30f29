"""The KRaft controller quorum's leader, asked with DescribeQuorum (which aiokafka lacks)."""

from __future__ import annotations

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

from shared.kafka import KafkaConfig

METADATA_TOPIC = "__cluster_metadata"
_REPLICA = CompactArray(("replica_id", Int32), ("log_end_offset", Int64), ("tags", TaggedFields))


class DescribeQuorumResponse_v0(Response):
    API_KEY = 55
    API_VERSION = 0
    SCHEMA = Schema(
        ("error_code", Int16),
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("high_watermark", Int64),
                        ("current_voters", _REPLICA),
                        ("observers", _REPLICA),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 55
    API_VERSION = 0
    RESPONSE_TYPE = DescribeQuorumResponse_v0
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                ("partitions", CompactArray(("partition_index", Int32), ("tags", TaggedFields))),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest(Request[DescribeQuorumRequest_v0]):
    API_KEY = 55

    def build(
        self, request_struct_class: type[DescribeQuorumRequest_v0]
    ) -> DescribeQuorumRequest_v0:
        return request_struct_class([(METADATA_TOPIC, [(0, {})], {})], {})


async def quorum_leader(kafka: KafkaConfig) -> int:
    """The node id of the active controller (brokers forward DescribeQuorum to it)."""
    client = AIOKafkaClient(**kafka.client_kwargs(), request_timeout_ms=10000)
    await client.bootstrap()
    try:
        # Any live broker answers; one that was just killed may still be in the metadata.
        live = [b.nodeId for b in client.cluster.brokers() if await client.ready(b.nodeId)]
        if not live:
            raise KafkaConnectionError("no broker answers")
        response = await client.send(live[0], DescribeQuorumRequest())
    finally:
        await client.close()
    if response.error_code:
        raise for_code(response.error_code)("DescribeQuorum")
    [(_, [partition], _)] = response.topics
    if partition[1]:
        raise for_code(partition[1])("DescribeQuorum")
    return int(partition[2])
