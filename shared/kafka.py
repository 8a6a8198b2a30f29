"""Kafka helpers: client security from settings, an idempotent producer, consumers, topics."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from shared.events import CloudEvent, encode_event

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from shared.config import BaseServiceSettings


@dataclass(frozen=True)
class KafkaConfig:
    """Where a Kafka client connects and how it authenticates (the password never in a repr)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.sasl and (not self.username or self.password is None):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs"
                " KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> KafkaConfig:
        return cls(
            bootstrap=settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )

    def as_user(self, username: str, password: str) -> KafkaConfig:
        """The same broker and protocol, another SASL principal."""
        return dataclasses.replace(self, username=username, password=SecretStr(password))

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.sasl:
            assert self.password is not None
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password.get_secret_value(),
            }
        return kwargs

    def faust_credentials(self) -> CredentialsT | None:
        """The same settings as faust's `broker_credentials` (None: plaintext)."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            assert self.password is not None
            return SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        context = self.ssl_context()
        return SSLCredentials(context) if context is not None else None

    def env(self) -> dict[str, str]:
        """The environment variables that give a service process these settings."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": self.security_protocol,
            "KAFKA_SASL_MECHANISM": self.sasl_mechanism,
        }
        optional = {
            "KAFKA_SASL_USERNAME": self.username,
            "KAFKA_SASL_PASSWORD": self.password.get_secret_value() if self.password else None,
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        return env | {k: v for k, v in optional.items() if v is not None}


def make_producer(
    kafka: KafkaConfig, *, linger_ms: int = 2, client_id: str = "antrean"
) -> AIOKafkaProducer:
    """Idempotent producer (acks=all, no duplicates on internal retries, order kept per key)."""
    return AIOKafkaProducer(
        **kafka.client_kwargs(),
        client_id=client_id,
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )


def make_consumer(
    kafka: KafkaConfig,
    *topics: str,
    group_id: str | None,
    auto_offset_reset: str = "earliest",
    enable_auto_commit: bool = False,
    fetch_max_wait_ms: int = 20,
) -> AIOKafkaConsumer:
    # A low fetch_max_wait_ms: the default 500 ms would add latency to every idle fetch.
    return AIOKafkaConsumer(
        *topics,
        **kafka.client_kwargs(),
        group_id=group_id,
        auto_offset_reset=auto_offset_reset,
        enable_auto_commit=enable_auto_commit,
        fetch_max_wait_ms=fetch_max_wait_ms,
        isolation_level="read_committed",
    )


def make_admin(kafka: KafkaConfig, *, request_timeout_ms: int = 15000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=request_timeout_ms)


async def send_event(producer: AIOKafkaProducer, topic: str, event: CloudEvent) -> None:
    """Publish one event keyed by its queue id and wait for the broker's acknowledgement."""
    key = str(event.data["queue_id"]).encode()
    await producer.send_and_wait(topic, encode_event(event), key=key)


@dataclass(frozen=True)
class TopicSpec:
    """How every topic of a deployment is made: partitions, replication, min.insync.replicas."""

    partitions: int = 4
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def __post_init__(self) -> None:
        if min(self.partitions, self.replication_factor, self.min_insync_replicas) < 1:
            raise ValueError("topic partitions, replication and min.insync.replicas must be >= 1")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS={self.min_insync_replicas} is larger than"
                f" KAFKA_REPLICATION_FACTOR={self.replication_factor}"
            )

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> TopicSpec:
        return cls(
            settings.kafka_topic_partitions,
            settings.kafka_replication_factor,
            settings.kafka_min_insync_replicas,
        )


class TopicMismatch(RuntimeError):
    """An existing topic is not made as the settings say (a restart will not change that)."""


class TopicsMissing(RuntimeError):
    """Topics that do not exist (and were not to be created here)."""


async def ensure_topics(
    kafka: KafkaConfig,
    topics: Iterable[str],
    spec: TopicSpec | None = None,
    *,
    create: bool = True,
    check_configs: bool = True,
) -> None:
    """Create the missing topics as `spec` says (`create=False`: TopicsMissing instead) and
    check the existing ones: TopicMismatch names the first topic made otherwise.
    `check_configs=False` skips min.insync.replicas (needs DescribeConfigs on the topic)."""
    spec = spec or TopicSpec()
    names = list(topics)
    admin = make_admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in names if t not in existing]
        if missing and not create:
            raise TopicsMissing(f"Kafka topics missing: {', '.join(missing)}")
        if missing:
            await _create(admin, missing, spec)
        # Just-created topics are checked too (a racing creator may have made them otherwise),
        # once every broker knows them: until then one may answer UnknownTopicOrPartition.
        for attempt in range(40):
            try:
                await _check(admin, names, spec, check_configs)
                return
            except KafkaError as exc:
                if not exc.retriable or attempt == 39:
                    raise
            await asyncio.sleep(0.25)
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, names: list[str], spec: TopicSpec) -> None:
    wanted = [
        NewTopic(
            name=t,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            topic_configs={"min.insync.replicas": str(spec.min_insync_replicas)},
        )
        for t in names
    ]
    # Per-topic errors come back in the response, not as exceptions: a principal
    # without Create must fail here, not subscribe to a missing topic later.
    response = await admin.create_topics(wanted)
    for topic, code, *_ in response.topic_errors:
        error = for_code(code) if code else None
        if error is not None and error is not TopicAlreadyExistsError:
            raise error(f"cannot create topic {topic}")


async def _check(
    admin: AIOKafkaAdminClient, names: list[str], spec: TopicSpec, check_configs: bool
) -> None:
    described = {t["topic"]: t for t in await admin.describe_topics(names)}
    min_isr = await _min_insync_replicas(admin, names) if check_configs else {}
    for name in names:
        topic = described.get(name)
        if topic is None or topic["error_code"]:
            code = topic["error_code"] if topic else 0
            raise (for_code(code) if code else TopicsMissing)(f"cannot describe topic {name}")
        partitions = topic["partitions"]
        replication = max((len(p["replicas"]) for p in partitions), default=0)
        found = (len(partitions), replication, min_isr.get(name, 0))
        wanted = (spec.partitions, spec.replication_factor, spec.min_insync_replicas)
        n = 3 if check_configs else 2
        if found[:n] != wanted[:n]:
            raise TopicMismatch(
                f"Kafka topic {name}: wanted {_describe(wanted[:n])}, found {_describe(found[:n])}"
            )


def _describe(values: tuple[int, ...]) -> str:
    keys = ("partitions", "replication", "min.insync.replicas")
    return " ".join(f"{k}={v}" for k, v in zip(keys, values, strict=False))


async def _min_insync_replicas(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None}) for t in names
    ]
    found: dict[str, int] = {}
    for response in await admin.describe_configs(resources):
        for code, message, _type, name, entries, *_ in response.resources:
            if code:
                raise for_code(code)(f"cannot describe the configs of topic {name}: {message}")
            for key, value, *_ in entries:
                if key == "min.insync.replicas":
                    found[name] = int(value)
    return found


async def kafka_reachable(kafka: KafkaConfig, timeout_ms: int = 3000) -> bool:
    admin = make_admin(kafka, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()
