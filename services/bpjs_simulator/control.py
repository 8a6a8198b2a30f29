"""Control API under /_sim/ (tests, demos): reset, seed, state, faults, options, keys, log."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.bpjs_simulator.config import CredentialsPatch, OptionsPatch, RuntimeOptions
from services.bpjs_simulator.faults import FaultRule
from services.bpjs_simulator.runtime import Simulator, configured_credentials
from services.bpjs_simulator.state import FktpEntry

router = APIRouter(prefix="/_sim", tags=["simulator control"])


class SeedBooking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kodebooking: str = Field(min_length=1)
    tasks: dict[int, int] = Field(default_factory=dict)  # taskid -> waktu (epoch ms)
    cancelled: bool = False
    served: bool = False  # records task 5 when not given
    data: dict[str, Any] = Field(default_factory=dict)


class SeedFktp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tanggalperiksa: str
    kodepoli: str
    nomorkartu: str
    cancelled: bool = False
    served: bool = False


class SeedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bookings: list[SeedBooking] = Field(default_factory=list)
    fktp: list[SeedFktp] = Field(default_factory=list)


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


@router.post("/reset")
async def reset(request: Request) -> dict[str, bool]:
    _sim(request).reset()
    return {"ok": True}


@router.post("/seed")
async def seed(request: Request, body: SeedRequest) -> dict[str, Any]:
    state = _sim(request).state
    bookings = [
        state.seed_booking(
            b.kodebooking, tasks=b.tasks, cancelled=b.cancelled, served=b.served, data=b.data
        ).view()
        for b in body.bookings
    ]
    fktp = [state.seed_fktp(FktpEntry(**f.model_dump())).view() for f in body.fktp]
    return {"bookings": bookings, "fktp": fktp}


@router.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return _sim(request).state.snapshot()


@router.get("/state/bookings/{kodebooking:path}")
async def booking(request: Request, kodebooking: str) -> dict[str, Any]:
    found = _sim(request).state.bookings.get(kodebooking)
    if found is None:
        raise HTTPException(404, f"no booking {kodebooking!r}")
    return found.view()


@router.get("/state/fktp")
async def fktp_entry(
    request: Request, tanggalperiksa: str, kodepoli: str, nomorkartu: str
) -> dict[str, Any]:
    found = _sim(request).state.fktp.get((tanggalperiksa, kodepoli, nomorkartu))
    if found is None:
        raise HTTPException(404, "no such antreanfktp entry")
    return found.view()


@router.get("/faults")
async def list_faults(request: Request) -> list[FaultRule]:
    return _sim(request).faults.rules


@router.post("/faults")
async def add_fault(request: Request, rule: FaultRule) -> FaultRule:
    return _sim(request).faults.add(rule)


@router.delete("/faults")
async def clear_faults(request: Request, route: str | None = None) -> dict[str, int]:
    return {"removed": _sim(request).faults.clear(route)}


@router.get("/config")
async def get_config(request: Request) -> dict[str, Any]:
    sim = _sim(request)
    return {**sim.options.model_dump(), **_public_settings(sim)}


@router.patch("/config")
async def patch_config(request: Request, patch: OptionsPatch) -> dict[str, Any]:
    sim = _sim(request)
    merged = {**sim.options.model_dump(), **patch.model_dump(exclude_unset=True)}
    try:
        sim.options = RuntimeOptions.model_validate(merged)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from exc
    return {**sim.options.model_dump(), **_public_settings(sim)}


@router.patch("/credentials")
async def rotate_credentials(request: Request, patch: CredentialsPatch) -> dict[str, Any]:
    """Accept other credentials from now on, as when BPJS rotates a consumer's key."""
    sim = _sim(request)
    current = sim.credentials
    sim.credentials = dataclasses.replace(
        current,
        cons_id=patch.cons_id or current.cons_id,
        secret_key=patch.secret_key or current.secret_key,
        user_key=patch.user_key or current.user_key,
    )
    return _credentials_view(sim)


@router.delete("/credentials")
async def restore_credentials(request: Request) -> dict[str, Any]:
    """Accept the configured credentials again (also done by `/_sim/reset`)."""
    sim = _sim(request)
    sim.credentials = configured_credentials(sim.settings)
    return _credentials_view(sim)


@router.get("/requests")
async def requests_log(
    request: Request, route: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    return _sim(request).log.view(route, limit)


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    return _sim(request).state.stats()


def _credentials_view(sim: Simulator) -> dict[str, Any]:
    """Only whether the set differs from the configured one: the secrets are never shown."""
    return {
        "cons_id": sim.credentials.cons_id,
        "rotated": sim.credentials != configured_credentials(sim.settings),
    }


def _public_settings(sim: Simulator) -> dict[str, Any]:
    """Settings a test may need to know; the secret and the user key are never shown."""
    settings = sim.settings
    return {
        "cons_id": sim.credentials.cons_id,
        "credentials_rotated": sim.credentials != configured_credentials(settings),
        "rs_prefix": settings.rs_prefix,
        "fktp_prefix": settings.fktp_prefix,
        "max_hang_s": settings.max_hang_s,
    }
