"""Identity-provider keys against a real local JWKS server: the cancel API and the notifier."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from tests.fixtures.api import api_env, auth
from tests.fixtures.infra import wait_until
from tests.fixtures.jwks import GARBAGE, JwksServer, jwks_env
from tests.integration.test_notifier import close_code, start_notifier

pytestmark = pytest.mark.integration


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    """The identity provider's JWKS endpoint, on a free local port."""
    server = JwksServer()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def jwks_api(
    database: str, kafka: str, prefix: str, url: str, **extra: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The cancel API in-process, verifying RS256 tokens from `url` (no relay: not needed)."""
    env = api_env(database, kafka, prefix, **jwks_env(url, OUTBOX_RELAY_ENABLED="false", **extra))
    app = create_app(CancelApiSettings(**env))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def list_status(client: httpx.AsyncClient, tok: str) -> int:
    return (await client.get("/antrian_ruangan", headers=auth(tok))).status_code


def assert_auth_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "auth_unavailable" and r.json()["title"]
    assert int(r.headers["retry-after"]) >= 1


async def test_a_key_rotated_out_is_refused_after_the_refresh_period(
    idp, database, infra, topic_prefix
):
    old = idp.add_key()
    async with jwks_api(
        database,
        infra.kafka_for("api"),
        topic_prefix,
        idp.url,
        AUTH_JWKS_REFRESH_S="0.5",
        AUTH_JWKS_MIN_REFETCH_S="60",  # the old key's tokens must not trigger the refresh
        AUTH_TOKEN_CACHE_S="3600",  # nor may the token cache keep the old key alive
    ) as client:
        old_token = idp.token(old)
        assert await list_status(client, old_token) == 200
        new = idp.add_key()
        idp.remove_key(old)

        async def rotated() -> bool:
            return await list_status(client, old_token) == 401

        await wait_until(rotated, 10, what="the removed key refused")
        assert await list_status(client, idp.token(new)) == 200


async def test_known_keys_are_answered_while_the_provider_hangs(idp, database, infra, topic_prefix):
    known = idp.add_key()
    async with jwks_api(
        database, infra.kafka_for("api"), topic_prefix, idp.url, AUTH_JWKS_MIN_REFETCH_S="0"
    ) as client:
        assert await list_status(client, idp.token(known)) == 200
        idp.hang()
        late = idp.add_key()  # published only once the hanging request answers
        waiting = asyncio.create_task(list_status(client, idp.token(late)))
        await wait_until(lambda: idp.hanging == 1, 10, what="a fetch held by the provider")
        statuses = await asyncio.wait_for(
            asyncio.gather(*(list_status(client, idp.token(known)) for _ in range(20))), 5
        )
        assert statuses == [200] * 20
        assert idp.hanging == 1 and not waiting.done()  # still hanging all along
        idp.release()
        assert await asyncio.wait_for(waiting, 10) == 200  # the shared fetch brought its key


async def test_a_flood_of_200_unknown_key_ids_causes_at_most_two_fetches(
    idp, database, infra, topic_prefix
):
    signer = idp.add_key()
    # Every one of the 200 must reach the verifier at once, so none is refused as overload.
    async with jwks_api(
        database, infra.kafka_for("api"), topic_prefix, idp.url, AUTH_JWKS_MIN_REFETCH_S="1",
        API_MAX_IN_FLIGHT="400",
    ) as client:  # fmt: skip
        forged = [idp.token(f"k-{uuid.uuid4().hex}", key_of=signer) for _ in range(200)]
        statuses = await asyncio.wait_for(
            asyncio.gather(*(list_status(client, t) for t in forged)), 60
        )
        assert statuses == [401] * 200
        assert idp.requests <= 2
        assert await list_status(client, idp.token(signer)) == 200
        # A key the provider publishes later is learnt by the first token that needs it once
        # the min refetch period has passed, with one fetch (the polls before it cause none).
        after_flood = idp.requests
        new = idp.add_key()

        async def learnt() -> bool:
            return await list_status(client, idp.token(new)) == 200

        await wait_until(learnt, 10, what="the new key learnt")
        assert idp.requests == after_flood + 1


async def test_unreachable_provider_gives_503_auth_unavailable_never_401(
    database, infra, topic_prefix
):
    idp = JwksServer()
    kid = idp.add_key()
    tok = idp.token(kid)
    idp.stop()  # nothing listens on its port any more
    async with jwks_api(database, infra.kafka_for("api"), topic_prefix, idp.url) as client:
        r = await client.get("/antrian_ruangan", headers=auth(tok))
        assert_auth_unavailable(r)
        r = await client.post("/antrian_ruangan/batal/1", headers=auth(tok))
        assert_auth_unavailable(r)


@pytest.mark.parametrize("mode", sorted(GARBAGE))
async def test_provider_answering_garbage_gives_503_auth_unavailable(
    idp, database, infra, topic_prefix, mode
):
    kid = idp.add_key()
    idp.mode = mode
    async with jwks_api(database, infra.kafka_for("api"), topic_prefix, idp.url) as client:
        assert_auth_unavailable(await client.get("/antrian_ruangan", headers=auth(idp.token(kid))))
        assert idp.requests >= 1


async def test_known_keys_keep_working_while_the_provider_is_down(
    idp, database, infra, topic_prefix
):
    known = idp.add_key()
    unknown = idp.add_key()
    idp.remove_key(unknown)
    async with jwks_api(
        database,
        infra.kafka_for("api"),
        topic_prefix,
        idp.url,
        AUTH_JWKS_REFRESH_S="0.3",
        AUTH_JWKS_MIN_REFETCH_S="0",
        AUTH_TOKEN_CACHE_S="0",
    ) as client:
        assert await list_status(client, idp.token(known)) == 200
        before = idp.requests
        idp.mode = "html"
        await wait_until(lambda: idp.requests > before + 1, 10, what="failed refreshes")
        # The last good set stays for the kids it holds; a kid it lacks cannot be decided.
        assert await list_status(client, idp.token(known)) == 200
        assert_auth_unavailable(
            await client.get("/antrian_ruangan", headers=auth(idp.token(unknown)))
        )


async def test_notifier_closes_with_1013_when_the_provider_is_down(spawn, infra, topic_prefix):
    idp = JwksServer()
    kid = idp.add_key()
    # min refetch 0: the unknown kid below triggers a fetch at once (and meets the garbage).
    env = jwks_env(idp.url, AUTH_JWKS_MIN_REFETCH_S="0")
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix, **env)
    try:
        async with asyncio.timeout(30):
            # Up: the token is accepted (positive control of the same setup).
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": idp.token(kid)}))
                assert json.loads(await ws.recv())["type"] == "ready"
            # Answering garbage, then gone: a token whose key it cannot learn gets 1013.
            idp.mode = "html"
            other = idp.add_key()
            auth_msg = json.dumps({"type": "auth", "token": idp.token(other)})
            assert await close_code(url, auth_msg) == 1013
    finally:
        idp.stop()
    stranger = JwksServer()
    tok = stranger.token(stranger.add_key())
    stranger.stop()
    assert await close_code(url, json.dumps({"type": "auth", "token": tok})) == 1013
