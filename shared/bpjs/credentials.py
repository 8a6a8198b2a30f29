"""One BPJS credential set (consumer id, secret, user key); clinics may each carry their own."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class BpjsCredentials:
    """What signs a call and decrypts its reply; passed per call, never read from a global."""

    cons_id: str
    secret_key: SecretStr
    user_key: SecretStr

    @classmethod
    def of(cls, cons_id: str, secret_key: str, user_key: str) -> BpjsCredentials:
        """Build from plain strings (settings, database rows); the secrets get wrapped at once."""
        return cls(cons_id, SecretStr(secret_key), SecretStr(user_key))


# The simulator's dev values (services/bpjs_simulator): never valid at the real gateway.
DEV_CREDENTIALS = BpjsCredentials.of("10001", "sim-dev-secret", "sim-dev-user-key")
