"""docs/asyncapi.yaml passes the AsyncAPI parser and describes what the code sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from services.notifier.messages import to_message
from shared.events import decode_event
from shared.events.models import EVENT_TYPES
from shared.events.schemas import file_name
from tests.fixtures.contract import REPO, asyncapi, check_ws_message, event_message_pointer

PARSER = REPO / "node_modules" / "@asyncapi" / "parser"


def test_the_document_passes_the_asyncapi_parser():
    node = shutil.which("node")
    assert node and PARSER.exists(), "run `bash infra/browser.sh ensure` (npm ci)"
    run = subprocess.run(
        [node, "tests/asyncapi/validate.mjs", "docs/asyncapi.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(run.stdout) if run.stdout.strip().startswith("{") else None
    assert run.returncode == 0 and report is not None, run.stdout + run.stderr
    for warning in report["warnings"]:
        print(f"asyncapi warning {warning['code']} at {warning['path']}: {warning['message']}")
    assert report["errors"] == []
    assert {"QueueCancelled", "queue.cancelled", "auth", "resync"} <= set(report["messages"])


def test_every_topic_and_event_version_is_described_with_its_checked_in_schema():
    doc = asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    for type_name, (topic, _, current) in EVENT_TYPES.items():
        assert topic in addresses
        for version in range(1, current + 1):
            pointer = event_message_pointer(type_name, version)
            payload = doc["components"]["messages"][pointer.split("/")[3]]["payload"]
            refs = json.dumps(payload)
            assert f"schemas/{file_name(type_name, version)}" in refs
            assert "schemas/CloudEvent.json" in refs


def _sent_by_the_notifier() -> set[str]:
    """Every message type the notifier's code writes to a websocket."""
    found: set[str] = set()
    for path in (REPO / "services" / "notifier").glob("*.py"):
        found |= set(re.findall(r'"type": "([a-z._]+)"', path.read_text(encoding="utf-8")))
    return found


def test_every_message_the_notifier_sends_is_described():
    doc = asyncapi()
    names = {
        doc["components"]["messages"][r["$ref"].split("/")[-1]]["name"]
        for r in doc["channels"]["notifierSocket"]["messages"].values()
    }
    sent = _sent_by_the_notifier()
    assert {"ready", "resync", "pong", "error", "queue.cancelled", "bpjs.synced"} <= sent
    assert sent <= names
    assert {"auth", "subscribe", "resume", "ping"} <= names
    app = (REPO / "services" / "notifier" / "app.py").read_text(encoding="utf-8")
    codes = set(re.findall(r'"code": "([a-z_]+)"', app))
    assert codes == set(
        doc["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"]
    )


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_the_message_made_of_each_kept_example_event_fits_its_schema(type_name):
    raw = (REPO / "tests" / "data" / "events" / "v1" / f"{type_name}.json").read_bytes()
    routed = to_message(decode_event(raw))
    assert routed is not None
    check_ws_message({**routed.body, "cursor": "c1"})
    check_ws_message({"type": "ready", "user_id": "u-1", "clinic_id": "K", "cursor": "c0"})


def test_a_message_the_document_does_not_allow_is_caught():
    with pytest.raises(AssertionError, match="is not in"):
        check_ws_message({"type": "queue.restored"})
    with pytest.raises(AssertionError, match="queue_id"):
        check_ws_message(
            {
                "type": "bpjs.synced",
                "event_id": "e",
                "cursor": "c",
                "queue_id": "7",
                "ticket_number": "A-1",
                "recovered": False,
            }
        )
