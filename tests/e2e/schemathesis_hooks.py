"""Schemathesis hooks for tests/e2e/test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS)."""

import uuid

import schemathesis

from services.cancel_api.openapi import IDEMPOTENCY_KEY_MAX


@schemathesis.hook
def before_call(context, case, kwargs):
    """A well-formed Idempotency-Key becomes unique per request. The fuzzer draws keys from a
    small pool and reuses them with other bodies, which the API rightly refuses
    (422 `idempotency_key_reused`); an over-long key stays as drawn, to be refused."""
    for name in list(case.headers or {}):
        if name.lower() == "idempotency-key" and len(case.headers[name]) <= IDEMPOTENCY_KEY_MAX:
            case.headers[name] = uuid.uuid4().hex
