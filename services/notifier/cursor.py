"""Opaque resume cursors: per topic-partition, the next Kafka offset the client has not seen.

A cursor is base64url (no padding) of compact JSON `{"v": 1, "p": [[topic, partition,
offset], ...]}` where `topic` is the logical name (without the test/deployment prefix). It is a
vector, not a single number: the notifier reads several partitions, and "everything before this
offset in each partition was either delivered or not meant for you" is exactly what a resume
needs. It is valid on every notifier instance and across restarts, because the offsets are
Kafka's; topics keep 7 days, so a cursor can be resumed for at least 24 hours.
"""

from __future__ import annotations

import base64
import binascii

import orjson

TP = tuple[str, int]
Position = dict[TP, int]


class CursorError(ValueError):
    """The client sent something that is not a cursor of ours."""


def encode(position: Position) -> str:
    parts = [[t, p, o] for (t, p), o in sorted(position.items())]
    raw = orjson.dumps({"v": 1, "p": parts})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str) -> Position:
    if not isinstance(cursor, str) or not cursor or len(cursor) > 8192:
        raise CursorError("cursor must be a non-empty string")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        obj = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("not a cursor") from exc
    if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("p"), list):
        raise CursorError("unknown cursor version")
    out: Position = {}
    for item in obj["p"]:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not all(isinstance(x, int) and x >= 0 for x in item[1:])
        ):
            raise CursorError("malformed cursor entry")
        out[(item[0], item[1])] = item[2]
    return out


def maximum(a: Position, b: Position) -> Position:
    """Element-wise maximum: the position covering both."""
    out = dict(a)
    for tp, off in b.items():
        if off > out.get(tp, -1):
            out[tp] = off
    return out


def covers(a: Position, b: Position) -> bool:
    """True when `a` is at or past `b` in every partition of `b`."""
    return all(a.get(tp, 0) >= off for tp, off in b.items())
