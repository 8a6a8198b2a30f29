"""PoolWaits, the door's measure of the database: how long the longest-waiting request has
waited, whatever order the waits end in."""

from __future__ import annotations

import time

import pytest

from services.cancel_api.admission import PoolWaits


def test_the_oldest_wait_is_the_earliest_still_waiting(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    waits = PoolWaits()
    assert waits.oldest_s() == 0.0
    first, second = waits.waiting(), waits.waiting()
    first.__enter__()
    now[0] = 100.5
    second.__enter__()
    now[0] = 101.0
    assert waits.oldest_s() == 1.0
    second.__exit__(None, None, None)  # a younger wait ending leaves the oldest in place
    assert waits.oldest_s() == 1.0
    third = waits.waiting()
    third.__enter__()
    first.__exit__(None, None, None)
    now[0] = 101.25
    assert waits.oldest_s() == 0.25
    third.__exit__(None, None, None)
    assert waits.oldest_s() == 0.0


def test_a_wait_that_fails_is_no_longer_counted():
    waits = PoolWaits()
    with pytest.raises(TimeoutError), waits.waiting():
        raise TimeoutError
    assert waits.oldest_s() == 0.0
