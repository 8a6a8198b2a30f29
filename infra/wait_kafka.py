"""Wait until Kafka answers an admin round trip (list topics) and, given a third argument, has
registered that many brokers; exit 1 at the deadline."""

import asyncio
import os
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


def _auth() -> dict[str, object]:
    """SASL settings from the environment (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)."""
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if not protocol.startswith("SASL_"):
        return {}
    return {
        "security_protocol": protocol,
        "sasl_mechanism": os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        "sasl_plain_username": os.environ.get("KAFKA_SASL_USERNAME"),
        "sasl_plain_password": os.environ.get("KAFKA_SASL_PASSWORD"),
    }


async def main(bootstrap: str, deadline_s: float, brokers: int = 1) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **_auth())
        try:
            await admin.start()
            await admin.list_topics()
            # Topics with replication N can only be created once N brokers are registered.
            if len((await admin.describe_cluster())["brokers"]) >= brokers:
                return 0
        except Exception:  # noqa: S110 - not up yet: the next round tries again
            pass
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    print(
        f"kafka at {bootstrap} did not answer with {brokers} broker(s) within {deadline_s} s",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    brokers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), brokers)))
