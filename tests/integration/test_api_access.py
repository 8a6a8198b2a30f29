"""Cancel API access: 401 bodies say nothing of the verifier, reading needs a permission, and
a client's X-Request-ID reaches no log, header or audit row unless it is a safe short token."""

import re

import asyncpg
import jwt
import pytest

from tests.fixtures.api import SECRET, auth, token

pytestmark = pytest.mark.integration

FRESH_ID = re.compile(r"[0-9a-f]{32}")


def forged() -> str:
    head, body, _ = token().split(".")
    return f"{head}.{body}.c2lnbmF0dXJl"


def expired() -> str:
    claims = {**jwt.decode(token(), SECRET, algorithms=["HS256"]), "exp": 1_000_000_000}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("make", "internal"),
    [
        (forged, "Signature verification failed"),
        (expired, "Signature has expired"),
        (lambda: "not-a-jwt", "Not enough segments"),
    ],
)
async def test_a_401_never_echoes_the_verifiers_message(api, make, internal):
    for r in (
        await api.client.get("/antrian_ruangan", headers=auth(make())),
        await api.cancel(1, tok=make()),
    ):
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthenticated"
        assert internal.lower() not in r.text.lower()
        assert "invalid token" not in r.text.lower()
        assert r.json()["detail"] == "Token tidak valid atau sudah kedaluwarsa."


async def test_reading_tickets_without_any_permission_is_403(api):
    t = await api.register()
    nobody = token(perms=[])
    r = await api.client.get("/antrian_ruangan", headers=auth(nobody))
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    r = await api.client.get(f"/antrian_ruangan/{t['id']}", headers=auth(nobody))
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    assert "Siti" not in r.text
    r = await api.client.get("/antrian_ruangan", headers=auth(token(perms=["reports only"])))
    assert r.status_code == 403


@pytest.mark.parametrize(
    "perm", ["cancel antrean", "create antrean", "update antrean", "manage bpjs sync"]
)
async def test_any_one_staff_permission_reads_the_clinics_tickets(api, perm):
    t = await api.register()
    r = await api.client.get(f"/antrian_ruangan/{t['id']}", headers=auth(token(perms=[perm])))
    assert r.status_code == 200 and r.json()["id"] == t["id"], r.text
    r = await api.client.get("/antrian_ruangan", headers=auth(token(perms=[perm])))
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [t["id"]]


async def audit_request_id(dsn: str, queue_id: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "select request_id from queue_audit where queue_id = $1 and action = 'cancel'",
            queue_id,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "hostile",
    [
        "abc\ninjected=1",
        "abc\n",
        "x" * 500,
        "a\"b'c",
        "id with spaces",
        "",
        "é-unicode",
    ],
    ids=["newline", "trailing-newline", "500-chars", "quotes", "spaces", "empty", "non-ascii"],
)
async def test_a_hostile_request_id_is_replaced_in_the_header_and_the_audit_row(
    api, database, hostile
):
    t = await api.register()
    raw = hostile.encode("utf-8")
    r = await api.cancel(t["id"], headers={"X-Request-ID": raw})
    assert r.status_code == 200, r.text
    echoed = r.headers["x-request-id"]
    assert FRESH_ID.fullmatch(echoed), echoed
    assert await audit_request_id(database, t["id"]) == echoed


async def test_a_safe_request_id_is_kept_in_the_header_and_the_audit_row(api, database):
    t = await api.register()
    rid = "trace-01:abc.DEF_9"
    r = await api.cancel(t["id"], headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    assert await audit_request_id(database, t["id"]) == rid
