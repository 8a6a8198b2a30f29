"""The checked-in JSON Schemas of the events follow the models, and never break old events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.events.envelope import UPCASTERS
from shared.events.models import EVENT_TYPES
from shared.events.schemas import (
    FOLDER,
    current_schemas,
    file_name,
    incompatibilities,
    load,
    render,
)
from shared.events.schemas.__main__ import main as regenerate
from tests.fixtures.contract import check_event_record

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "tests" / "data" / "events").glob("v*/*.json"))


def test_checked_in_schemas_match_the_models():
    stale = [
        name
        for name, schema in current_schemas().items()
        if not (FOLDER / name).exists()
        or (FOLDER / name).read_text(encoding="utf-8") != render(schema)
    ]
    assert not stale, f"regenerate with `python -m shared.events.schemas`: {stale}"


def test_every_released_version_keeps_its_schema_and_older_ones_have_an_upcaster():
    for type_name, (_, _, current) in EVENT_TYPES.items():
        for version in range(1, current + 1):
            assert (FOLDER / file_name(type_name, version)).exists(), (type_name, version)
        for version in range(1, current):
            assert (type_name, version) in UPCASTERS, f"no upcaster {type_name} v{version}"


def test_no_schema_file_without_an_event_version():
    known = {file_name(t, v) for t, (_, _, cur) in EVENT_TYPES.items() for v in range(1, cur + 1)}
    assert {p.name for p in FOLDER.glob("*.v*.json")} == known


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_kept_example_events_fit_the_schemas_of_their_version(path):
    event = json.loads(path.read_text(encoding="utf-8"))
    check_event_record(str(event["data"]["queue_id"]).encode(), path.read_bytes())


def _example(type_name: str) -> dict:
    return json.loads((REPO / "tests/data/events/v1" / f"{type_name}.json").read_text())


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda e: e["data"].update(queue_id="7"), "queue_id"),
        (lambda e: e["data"].pop("cancelled_by"), "cancelled_by"),
        (lambda e: e["data"]["cancelled_by"].update(user_id=1), "user_id"),
        (lambda e: e["data"].update(payer="GRATIS"), "payer"),
        (lambda e: e["data"].update(cancelled_at="2026-11-27T02:00:01"), "cancelled_at"),
        (lambda e: e.update(schemaversion=2), "QueueCancelled v2"),
        (lambda e: e.update(subject="queue/999"), "subject"),
    ],
)
def test_events_that_break_the_schemas_are_caught(change, where):
    event = _example("QueueCancelled")
    change(event)
    with pytest.raises(AssertionError, match=where):
        check_event_record(str(event["data"]["queue_id"]).encode(), json.dumps(event).encode())


def test_an_event_keyed_by_something_else_than_its_queue_id_is_caught():
    event = _example("BpjsSynced")
    with pytest.raises(AssertionError, match="key"):
        check_event_record(b"KLINIK-01", json.dumps(event).encode())


def _changed(name: str, change) -> tuple[dict, dict]:
    old = load(name)
    assert old is not None
    new = json.loads(json.dumps(old))
    change(new)
    return old, new


def _prop(schema: dict, field: str) -> dict:
    return schema["properties"][field]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["properties"].pop("room_id"), "room_id: removed"),
        (lambda s: _prop(s, "queue_id").update(type="string"), "queue_id"),
        (lambda s: _prop(s, "reason_text").update(anyOf=[{"type": "string"}]), "reason_text"),
        (lambda s: _prop(s, "payer").update(enum=["BPJS", "UMUM"]), "ASURANSI"),
        (lambda s: s["$defs"]["CancelledBy"]["properties"].pop("name"), "cancelled_by.name"),
        (
            lambda s: (
                s["properties"].update(room_name={"type": "string"}),
                s["required"].append("room_name"),
            ),
            "room_name: newly required",
        ),
    ],
)
def test_changes_that_old_events_would_not_survive_are_incompatible(change, problem):
    old, new = _changed("QueueCancelled.v1.json", change)
    problems = incompatibilities(old, new)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["properties"].update(room_name={"type": "string"}),
        lambda s: _prop(s, "payer").update(enum=["BPJS", "UMUM", "ASURANSI", "JAMKESDA"]),
        lambda s: _prop(s, "queue_id").update(description="the ticket id"),
        lambda s: s["required"].remove("reason_text"),
    ],
)
def test_a_new_optional_field_or_a_wider_type_is_compatible(change):
    assert incompatibilities(*_changed("QueueCancelled.v1.json", change)) == []


def test_the_generator_refuses_to_overwrite_a_released_schema_incompatibly(monkeypatch, tmp_path):
    for name, schema in current_schemas().items():
        (tmp_path / name).write_text(render(schema), encoding="utf-8")
    released = json.loads((tmp_path / "BpjsSynced.v1.json").read_text())
    released["properties"]["legacy"] = {"type": "string"}  # a field the model has since lost
    (tmp_path / "BpjsSynced.v1.json").write_text(render(released), encoding="utf-8")
    monkeypatch.setattr("shared.events.schemas.FOLDER", tmp_path)
    monkeypatch.setattr("shared.events.schemas.__main__.FOLDER", tmp_path)
    assert regenerate() == 1
    assert json.loads((tmp_path / "BpjsSynced.v1.json").read_text()) == released


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def test_no_committed_schema_was_ever_changed_incompatibly():
    """Every earlier committed state of a released schema file accepts nothing the current
    one refuses (a hand edit or a forced regeneration is caught here)."""
    if _git("rev-parse", "--is-inside-work-tree") is None:
        pytest.skip("not a git checkout: the history of the schema files is not available")
    checked = 0
    for path in sorted(FOLDER.glob("*.v*.json")):
        rel = path.relative_to(REPO).as_posix()
        current = json.loads(path.read_text(encoding="utf-8"))
        for commit in (_git("log", "--format=%H", "--", rel) or "").split():
            old = _git("show", f"{commit}:{rel}")
            if old is not None:
                assert incompatibilities(json.loads(old), current) == [], (rel, commit)
                checked += 1
    assert checked or not _git("log", "-1", "--format=%H", "--", FOLDER.as_posix())
