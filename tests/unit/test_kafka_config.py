"""Kafka client settings: from the environment to aiokafka and faust, the password never shown."""

import pytest

from shared.config import BaseServiceSettings
from shared.kafka import KafkaConfig

ENV = {
    "APP_ENV": "test",
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "cancel-api",
    "KAFKA_SASL_PASSWORD": "s3cret-kafka-password",
}


def test_sasl_settings_reach_aiokafka_and_faust_and_back_to_the_environment():
    kafka = KafkaConfig.from_settings(BaseServiceSettings(**ENV))
    kwargs = kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "cancel-api",
        "s3cret-kafka-password",
    )
    creds = kafka.faust_credentials()
    assert creds is not None and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.password == "s3cret-kafka-password"  # type: ignore[attr-defined]
    assert kafka.env() == {k: v for k, v in ENV.items() if k != "APP_ENV"}


def test_the_password_is_in_no_repr():
    kafka = KafkaConfig.from_settings(BaseServiceSettings(**ENV))
    for shown in (repr(kafka), str(kafka), repr(kafka.faust_credentials())):
        assert "s3cret" not in shown
    assert "cancel-api" in repr(kafka)


def test_sasl_without_a_username_or_password_is_refused_with_the_variable_names():
    env = {**ENV, "KAFKA_SASL_PASSWORD": ""}
    with pytest.raises(ValueError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaConfig.from_settings(BaseServiceSettings(**env))


def test_plaintext_gives_no_sasl_and_no_faust_credentials():
    kafka = KafkaConfig("127.0.0.1:9092")
    assert "sasl_plain_password" not in kafka.client_kwargs()
    assert kafka.faust_credentials() is None
