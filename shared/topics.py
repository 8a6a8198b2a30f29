"""`python -m shared.topics`: create the contract's Kafka topics and the services' ACLs."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import SecurityDisabled, for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.config import EXIT_CONFIG, BaseServiceSettings, load_settings
from shared.events import TOPIC_BPJS_SYNC_FAILED, TOPIC_BPJS_SYNCED, TOPIC_QUEUE_CANCELLED
from shared.kafka import KafkaConfig, TopicMismatch, TopicSpec, ensure_topics

TOPICS = (TOPIC_QUEUE_CANCELLED, TOPIC_BPJS_SYNCED, TOPIC_BPJS_SYNC_FAILED)


class Resource(IntEnum):  # Kafka's ResourceType codes
    TOPIC = 2
    GROUP = 3


class Op(IntEnum):  # Kafka's AclOperation codes
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


_LITERAL, _ALLOW, _ANY_HOST = 3, 3, "*"


@dataclass(frozen=True)
class Principals:
    """The SASL user names of the services (one principal each)."""

    api: str = "cancel-api"
    worker: str = "bpjs-sync-worker"
    notifier: str = "notifier"

    @classmethod
    def from_env(cls) -> Principals:
        d = cls()
        return cls(
            api=os.environ.get("KAFKA_API_USERNAME", d.api),
            worker=os.environ.get("KAFKA_WORKER_USERNAME", d.worker),
            notifier=os.environ.get("KAFKA_NOTIFIER_USERNAME", d.notifier),
        )


@dataclass(frozen=True)
class Acl:
    resource: Resource
    name: str
    user: str
    op: Op


def service_acls(prefix: str, users: Principals, worker_group: str) -> list[Acl]:
    """Least privilege: the API writes queue-cancelled; the worker reads it (in its group) and
    writes the bpjs-* topics; the notifier only reads (it assigns partitions, no group)."""
    cancelled, synced, failed = (f"{prefix}{t}" for t in TOPICS)
    acls = [Acl(Resource.TOPIC, cancelled, users.api, op) for op in (Op.WRITE, Op.DESCRIBE)]
    acls += [Acl(Resource.TOPIC, cancelled, users.worker, op) for op in (Op.READ, Op.DESCRIBE)]
    acls += [Acl(Resource.GROUP, worker_group, users.worker, Op.READ)]
    acls += [
        Acl(Resource.TOPIC, t, users.worker, op)
        for t in (synced, failed)
        for op in (Op.WRITE, Op.DESCRIBE)
    ]
    # faust's leader-assignor topic, which the worker creates and uses itself.
    leader = f"{worker_group}-__assignor-__leader"
    acls += [
        Acl(Resource.TOPIC, leader, users.worker, op)
        for op in (Op.CREATE, Op.READ, Op.WRITE, Op.DESCRIBE)
    ]
    acls += [
        Acl(Resource.TOPIC, t, users.notifier, op)
        for t in (cancelled, synced, failed)
        for op in (Op.READ, Op.DESCRIBE)
    ]
    return acls


async def create_acls(kafka: KafkaConfig, acls: list[Acl]) -> None:
    """Create ACL bindings (idempotent). aiokafka's admin client has no create_acls; its
    protocol layer has the versioned CreateAcls request, sent here to any broker."""
    client = AIOKafkaClient(**kafka.client_kwargs(), request_timeout_ms=15000)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        requests = [
            CreateAclsRequest(
                a.resource, a.name, _LITERAL, f"User:{a.user}", _ANY_HOST, a.op, _ALLOW
            )
            for a in acls
        ]
        responses = await asyncio.gather(*(client.send(node, r) for r in requests))
        for acl, response in zip(acls, responses, strict=True):
            for code, message, *_ in response.creation_responses:
                if code:
                    raise for_code(code)(f"ACL {acl}: {message}")
    finally:
        await client.close()


async def setup(
    kafka: KafkaConfig,
    *,
    prefix: str = "",
    users: Principals | None = None,
    worker_group: str = "bpjs-sync-worker",
    spec: TopicSpec | None = None,
) -> bool:
    """Topics (created as `spec` says, existing ones checked: TopicMismatch) and ACLs of one
    deployment (or one test's prefix); False: the broker has no authorizer, so no ACLs."""
    await ensure_topics(kafka, [f"{prefix}{t}" for t in TOPICS], spec)
    try:
        await create_acls(kafka, service_acls(prefix, users or Principals(), worker_group))
    except SecurityDisabled:
        return False
    return True


class TopicSettings(BaseServiceSettings):
    uses_database: ClassVar[bool] = False
    uses_auth: ClassVar[bool] = False


def main() -> None:
    s = load_settings(TopicSettings, "topics")
    group = os.environ.get("WORKER_CONSUMER_GROUP", "bpjs-sync-worker")
    spec = TopicSpec.from_settings(s)
    try:
        acls = asyncio.run(
            setup(
                KafkaConfig.from_settings(s),
                prefix=s.kafka_topic_prefix,
                users=Principals.from_env(),
                worker_group=group,
                spec=spec,
            )
        )
    except TopicMismatch as exc:
        # Kafka cannot lower partitions or change replication in place: an operator decides.
        sys.stderr.write(f"topics: {exc}\n")
        raise SystemExit(EXIT_CONFIG) from None
    names = ", ".join(s.topic(t) for t in TOPICS)
    made = f"partitions={spec.partitions} replication={spec.replication_factor}"
    made += f" min.insync.replicas={spec.min_insync_replicas}"
    print(
        f"kafka topics ready ({made}): {names}; "
        + ("ACLs ready" if acls else "no authorizer: no ACLs")
    )


if __name__ == "__main__":
    main()
