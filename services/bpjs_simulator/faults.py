"""Per-route fault rules (latency, hang, gateway errors, odd bodies, dropped replies)."""

from __future__ import annotations

import html
import itertools
import random
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STATUS_TEXT = {404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
                502: "Bad Gateway", 504: "Gateway Time-out"}  # fmt: skip


class FaultMode(StrEnum):
    LATENCY = "latency"  # delay, then answer normally
    HANG = "hang"  # never answer until the client gives up (or max_hang_s)
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_504 = "http_504"
    NON_JSON = "non_json"  # HTTP 200 with a plain-text body
    BUSINESS_201 = "business_201"  # a business refusal without touching state
    DROP_REPLY = "drop_reply"  # apply the call, then close the connection mid-reply
    NOT_RECORDED = "not_recorded"  # answer as the call would be (200 Ok), but record nothing


HTTP_ERROR_STATUS = {FaultMode.HTTP_500: 500, FaultMode.HTTP_502: 502, FaultMode.HTTP_504: 504}


class FaultRule(BaseModel):
    """One rule; `route` is "antreanrs:batal", "antreanfktp:*", "*", ... (service:operation)."""

    model_config = ConfigDict(extra="forbid")

    id: int = 0
    route: str = "*"
    mode: FaultMode
    latency_ms: int = Field(0, ge=0)  # the whole delay for "latency", a prelude for the others
    times: int | None = Field(None, ge=1)  # next N matching calls; None = until cleared
    probability: float | None = Field(None, gt=0, le=1)  # e.g. 0.1 for "10 % fail with 502"
    code: int = 201  # business_201: the metadata code
    message: str | None = None  # business_201 message, or the non_json body

    @model_validator(mode="after")
    def _route_shape(self) -> FaultRule:
        if self.route != "*" and ":" not in self.route:
            raise ValueError('route must be "*" or "<service>:<operation>", e.g. antreanrs:batal')
        return self

    def matches(self, route: str) -> bool:
        if self.route in ("*", route):
            return True
        service, _, operation = self.route.partition(":")
        return operation == "*" and route.startswith(f"{service}:")


class FaultBook:
    """Active rules, first match wins; a rule with `times` retires once used up."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self.rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(self._seed)

    def add(self, rule: FaultRule) -> FaultRule:
        stored = rule.model_copy(update={"id": next(self._ids)})
        self.rules.append(stored)
        return stored

    def clear(self, route: str | None = None) -> int:
        before = len(self.rules)
        self.rules = [r for r in self.rules if route is not None and r.route != route]
        return before - len(self.rules)

    def take(self, route: str) -> FaultRule | None:
        """The rule that fires for this call, if any; counts it against `times`."""
        for index, rule in enumerate(self.rules):
            if not rule.matches(route):
                continue
            # A probabilistic miss lets the call through and does not use up `times`.
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            if rule.times is not None:
                left = rule.times - 1
                if left == 0:
                    del self.rules[index]
                else:
                    self.rules[index] = rule.model_copy(update={"times": left})
            return rule
        return None


def html_page(status: int, detail: str = "") -> str:
    """An nginx-style error page like the ones BPJS's gateway serves."""
    title = f"{status} {_STATUS_TEXT.get(status, 'Error')}"
    extra = f"<p>{html.escape(detail)}</p>" if detail else ""
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>{extra}\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
