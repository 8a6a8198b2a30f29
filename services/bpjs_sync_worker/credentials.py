"""BPJS credentials per clinic: one deployment serves many clinics, each with its own consumer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from shared.bpjs import BpjsCredentials


class CredentialsError(ValueError):
    """The clinic credentials file is missing or malformed: the worker refuses to start."""


class NoCredentials(LookupError):
    """The credentials file is set and lacks this clinic: nothing may be sent for it."""


class CredentialBook:
    """Each clinic's credentials from a mounted secrets file; without a file, the default set
    (BPJS_*) for every clinic. With a file, a clinic missing from it never borrows the default:
    that would sign its calls as another facility."""

    def __init__(
        self, default: BpjsCredentials | None, by_clinic: Mapping[str, BpjsCredentials]
    ) -> None:
        self.default = default
        self._by_clinic = dict(by_clinic)

    def for_clinic(self, clinic_id: str) -> BpjsCredentials:
        """The clinic's credentials; NoCredentials when the file does not list the clinic."""
        found = self._by_clinic.get(clinic_id, self.default)
        if found is None:
            raise NoCredentials(f"clinic {clinic_id!r} is not in BPJS_CREDENTIALS_FILE")
        return found

    @property
    def clinics(self) -> frozenset[str]:
        return frozenset(self._by_clinic)

    @classmethod
    def load(cls, default: BpjsCredentials, path: Path | None) -> CredentialBook:
        """Read `{"<clinic_id>": {"cons_id", "secret_key", "user_key"}}` (all strings); `default`
        serves every clinic when there is no file, and none when there is one."""
        if path is None:
            return cls(default, {})
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CredentialsError(
                f"cannot read BPJS credentials file {path}: {type(exc).__name__}"
            ) from exc
        if not isinstance(raw, dict):
            raise CredentialsError("BPJS credentials file must map clinic ids to credentials")
        book: dict[str, BpjsCredentials] = {}
        for clinic, entry in raw.items():
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) and entry[k]
                for k in ("cons_id", "secret_key", "user_key")
            ):
                # Name the clinic, never the values: this message may reach a log.
                raise CredentialsError(
                    f"BPJS credentials of clinic {clinic!r} need cons_id, secret_key, user_key"
                )
            book[str(clinic)] = BpjsCredentials(
                entry["cons_id"], SecretStr(entry["secret_key"]), SecretStr(entry["user_key"])
            )
        return cls(None, book)
