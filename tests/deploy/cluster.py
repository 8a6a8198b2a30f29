"""A 3-node KRaft Kafka cluster of the test's own (infra/kafka/kafka.sh, KAFKA_NODES=3), on
ports clear of the shared broker, whose nodes the test may SIGKILL and restart."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shared.kafka import make_admin
from tests.deploy.quorum import quorum_leader
from tests.fixtures.infra import KafkaAccess, native_credentials, port_open, run_script

NODES = 3


def _free_base() -> int:
    """A client port p with p .. p + 2 * NODES - 1 all free (kafka.sh's per-node ports)."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 2)
        if not any(port_open("127.0.0.1", p) for p in range(base, base + 2 * NODES)):
            return base
    raise RuntimeError("no free range of Kafka ports")


@dataclass
class KafkaCluster:
    data_dir: Path
    base_port: int

    @classmethod
    def create(cls) -> KafkaCluster:
        return cls(Path(tempfile.mkdtemp(prefix="kafka-cluster-")), _free_base())

    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in range(1, NODES + 1))

    @property
    def access(self) -> KafkaAccess:
        return KafkaAccess.from_credentials(self.bootstrap, native_credentials(self.data_dir))

    def _env(self) -> dict[str, str]:
        return {
            "ANTREAN_DATA_DIR": str(self.data_dir),
            "KAFKA_NODES": str(NODES),
            "KAFKA_PORT": str(self.base_port),
            "KAFKA_CONTROLLER_PORT": str(self.base_port + 1),
            "KAFKA_HEAP": "384m",
        }

    def start(self) -> None:
        """Start every node that is not running (all of them at first) and wait for all."""
        run_script("infra/kafka/kafka.sh", "start", self._env())

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            run_script("infra/kafka/kafka.sh", "stop", self._env())
        for node in range(1, NODES + 1):  # whatever the script could not stop
            self.kill(node)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def pid(self, node: int) -> int | None:
        path = self.data_dir / "run" / f"kafka-{node}.pid"
        return int(path.read_text()) if path.exists() else None

    def kill(self, node: int) -> None:
        """SIGKILL one node (no controlled shutdown) and wait until it is gone."""
        pid = self.pid(node)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not _running(pid):
                return
            time.sleep(0.1)
        raise AssertionError(f"node {node} (pid {pid}) still running 10 s after SIGKILL")

    async def controller_leader(self) -> int:
        return await quorum_leader(self.access.admin)

    async def partition_leaders(self, topic: str) -> set[int]:
        admin = make_admin(self.access.admin)
        await admin.start()
        try:
            [meta] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {p["leader"] for p in meta["partitions"]}


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed node waits for its parent, init, to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
