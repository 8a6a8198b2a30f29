"""The identity provider's signing keys (JWKS): fetched asynchronously, refreshed, single-flight."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from typing import Any

import httpx
import jwt
import orjson

from shared.logging import get_logger

log = get_logger(__name__)

FETCH_TIMEOUT_S = 5.0  # the whole download, not per read: a trickling provider is cut off too
MAX_JWKS_BYTES = 1024 * 1024


class AuthUnavailable(Exception):
    """No usable key for a token because the identity provider cannot be reached or answers
    garbage: the caller answers "try again later" (HTTP 503, websocket 1013), never 401."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class UnknownKey(Exception):
    """The provider answered and has no key with this id: the token is not authentic."""


class JwksKeyStore:
    """RS256 keys of one JWKS URL.

    - A background task refreshes the whole set every `refresh_s`; a key the provider removed
      is refused from then on.
    - A known `kid` is answered from memory at once, also while a fetch is under way or hangs.
    - An unknown `kid` starts at most one fetch per `min_refetch_s` across all callers;
      callers that arrive while a fetch is under way share it (single flight).
    - While the provider is unreachable or answers garbage the last good key set stays in use
      for the kids it holds (tokens already issued keep working during an outage); a kid it
      does not hold raises AuthUnavailable. Failed fetches are retried with a backoff of 1 s
      doubling up to `min_refetch_s` (at least 1 s, at most `refresh_s`).
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float,
        min_refetch_s: float,
        timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._keys: dict[str, Any] = {}  # kid -> public key object
        self._fetched_at: float | None = None  # monotonic time of the last good fetch
        self._last_attempt = -math.inf  # monotonic start of the last fetch of any kind
        self._failures = 0  # consecutive failed fetches; 0 when the last one succeeded
        self._inflight: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic refresh (also started by the first lookup); needs a running loop."""
        if self._runner is None or self._runner.done():
            # A fresh context: the refresher's log lines carry no request's ids.
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    async def close(self) -> None:
        tasks = [t for t in (self._runner, self._inflight) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = self._inflight = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- lookups -----------------------------------------------------------------------------

    def has(self, kid: str) -> bool:
        return kid in self._keys

    async def key(self, kid: str) -> Any:
        """The public key for `kid`; UnknownKey (401) or AuthUnavailable (503) otherwise."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        self.start()
        fetch = self._inflight
        if fetch is None and time.monotonic() - self._last_attempt >= self._min_refetch_s:
            fetch = self._fetch_shared()
        if fetch is not None:
            # shield: a caller that gives up (client gone) does not cancel the shared fetch.
            await asyncio.shield(fetch)
            found = self._keys.get(kid)
            if found is not None:
                return found
        if self._failures or self._fetched_at is None:
            raise AuthUnavailable("identity provider keys unavailable", self._retry_after())
        raise UnknownKey(f"no key with kid {kid[:64]!r} in the identity provider's set")

    def _retry_after(self) -> int:
        due = self._last_attempt + self._backoff()
        return max(1, math.ceil(due - time.monotonic()))

    def _backoff(self) -> float:
        cap = min(self._refresh_s, max(1.0, self._min_refetch_s))
        return min(cap, 2.0 ** max(0, self._failures - 1))

    # -- fetching ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._failures:
                due = self._last_attempt + self._backoff()
            elif self._fetched_at is not None:
                due = self._fetched_at + self._refresh_s
            else:
                due = time.monotonic()  # nothing fetched yet: now
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # a lookup may have fetched meanwhile: compute again
            await asyncio.shield(self._fetch_shared())

    def _fetch_shared(self) -> asyncio.Task[None]:
        if self._inflight is None or self._inflight.done():
            self._last_attempt = time.monotonic()
            self._inflight = asyncio.get_running_loop().create_task(
                self._fetch(), context=contextvars.Context()
            )
            self._inflight.add_done_callback(self._clear_inflight)
        return self._inflight

    def _clear_inflight(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                keys = await self._download()
        except Exception as exc:  # unreachable, timeout, HTTP error, garbage: all the same here
            self._failures += 1
            log.warning(
                "jwks_fetch_failed",
                url=self._url,
                error=repr(exc)[:300],
                failures=self._failures,
                keeping_kids=sorted(self._keys),
            )
            return
        if set(keys) != set(self._keys):
            log.info("jwks_keys_changed", url=self._url, kids=sorted(keys))
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._failures = 0

    async def _download(self) -> dict[str, Any]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        async with self._client.stream(
            "GET", self._url, headers={"Accept": "application/json"}
        ) as response:
            if response.status_code != 200:
                raise ValueError(f"JWKS answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(bytes(body))


def parse_jwks(body: bytes) -> dict[str, Any]:
    """kid -> RSA public key of every usable RS256 signing key; ValueError when there is none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError("JWKS is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("JWKS has no 'keys' list")
    keys: dict[str, Any] = {}
    for jwk in data["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[kid] = jwt.PyJWK(jwk, algorithm="RS256").key
        except Exception:  # noqa: S112 - an unusable member is skipped, as RFC 7517 §5 says
            continue
    if not keys:
        raise ValueError("JWKS holds no usable RS256 signing key")
    return keys
