"""JSON Schemas of the events, generated from the pydantic models and kept in this folder.

`<Type>.v<N>.json` is the schema of `data` of one event type at one `schemaversion`;
`CloudEvent.json` the envelope. A released version's file is kept for good, so a change that
events already in Kafka would not survive (docs/EVENTS.md#schema-versions) is a new version:
`python -m shared.events.schemas` rewrites only the current versions' files and refuses such a
change to an existing one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events.envelope import CloudEvent
from shared.events.models import EVENT_TYPES

FOLDER = Path(__file__).resolve().parent
ENVELOPE_FILE = "CloudEvent.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Words that explain a schema but do not change what it accepts.
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment"}


def file_name(type_name: str, version: int) -> str:
    return f"{type_name}.v{version}.json"


def _schema(model: type[BaseModel], schema_id: str) -> dict[str, Any]:
    # Validation mode: the schema of what a reader accepts (a field with a default, such as
    # BpjsSynced.recovered, is optional).
    return {"$schema": _DIALECT, "$id": schema_id, **model.model_json_schema(mode="validation")}


def current_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for the envelope and the current version of every event type."""
    out = {ENVELOPE_FILE: _schema(CloudEvent, ENVELOPE_FILE)}
    for type_name, (_, model, version) in EVENT_TYPES.items():
        name = file_name(type_name, version)
        out[name] = _schema(model, name)
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def load(name: str) -> dict[str, Any] | None:
    path = FOLDER / name
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every local `#/$defs/...` reference replaced by its definition."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in _ANNOTATIONS}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _alternatives(node: dict[str, Any]) -> list[Any]:
    """The ways a value may satisfy `node`: its `anyOf` branches, one per `enum` value."""
    if "anyOf" in node:
        return [a for branch in node["anyOf"] for a in _alternatives(branch)]
    if "enum" in node:
        rest = {k: v for k, v in node.items() if k != "enum"}
        return [{**rest, "const": v} for v in node["enum"]]
    return [node]


def _compare(old: Any, new: Any, where: str, problems: list[str]) -> None:
    if old == new:
        return
    if (
        isinstance(old, dict)
        and isinstance(new, dict)
        and old.get("type") == new.get("type") == "object"
        and "properties" in old
    ):
        old_props, new_props = old["properties"], new.get("properties", {})
        for name in old_props:
            if name not in new_props:
                problems.append(f"{where}.{name}: removed")
            else:
                _compare(old_props[name], new_props[name], f"{where}.{name}", problems)
        for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
            problems.append(f"{where}.{name}: newly required")
        return
    if not isinstance(old, dict) or not isinstance(new, dict):
        problems.append(f"{where}: changed")
        return
    # A value the old schema allowed must still be allowed: each old alternative is kept
    # (objects among them compared field by field), new alternatives only widen it.
    new_alts = _alternatives(new)
    for alt in _alternatives(old):
        if alt in new_alts:
            continue
        same_shape = [
            n for n in new_alts if isinstance(n, dict) and n.get("type") == alt.get("type")
        ]
        if alt.get("type") == "object" and len(same_shape) == 1:
            _compare(alt, same_shape[0], where, problems)
        else:
            problems.append(f"{where}: {json.dumps(alt, sort_keys=True)} no longer accepted")


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why data valid under `old` may be refused under `new` (empty: a compatible change)."""
    problems: list[str] = []
    _compare(
        _inline(old, old.get("$defs", {})), _inline(new, new.get("$defs", {})), "data", problems
    )
    return problems
