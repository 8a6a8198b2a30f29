"""A clinic's service day and its bounds in its own zone (WIB, WITA, WIT, and zones with DST)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from shared.clinics import UnknownZone, day_bounds, service_day, zone

WIB, WITA, WIT = zone("Asia/Jakarta"), zone("Asia/Makassar"), zone("Asia/Jayapura")


def test_one_instant_is_a_different_day_in_wib_wita_and_wit():
    at = datetime(2026, 12, 2, 16, 30, tzinfo=UTC)  # 23:30 WIB, 00:30 WITA, 01:30 WIT
    assert service_day(WIB, at) == date(2026, 12, 2)
    assert service_day(WITA, at) == date(2026, 12, 3)
    assert service_day(WIT, at) == date(2026, 12, 3)


@pytest.mark.parametrize(("tz", "offset_h"), [(WIB, 7), (WITA, 8), (WIT, 9)])
def test_day_bounds_are_local_midnights_in_utc(tz, offset_h):
    start, end = day_bounds(tz, date(2026, 12, 2))
    assert start == datetime(2026, 12, 2, tzinfo=UTC) - timedelta(hours=offset_h)
    assert end - start == timedelta(days=1) and start.tzinfo is UTC
    assert service_day(tz, start) == date(2026, 12, 2)
    assert service_day(tz, end - timedelta(microseconds=1)) == date(2026, 12, 2)
    assert service_day(tz, end) == date(2026, 12, 3)


def test_a_day_with_a_clock_change_is_not_24_hours():
    start, end = day_bounds(zone("Europe/Berlin"), date(2026, 3, 29))
    assert end - start == timedelta(hours=23)


def test_the_first_and_last_days_of_the_calendar_have_bounds_not_an_overflow():
    start, end = day_bounds(WIT, date.min)
    assert start == datetime.min.replace(tzinfo=UTC) and end > start
    start, end = day_bounds(zone("Pacific/Pago_Pago"), date.max)
    assert end == datetime.max.replace(tzinfo=UTC) and end > start


@pytest.mark.parametrize("name", ["", "Asia/Nowhere", "WITA", "/etc/localtime", "../zoneinfo/UTC",
                                  " Asia/Jakarta"])  # fmt: skip
def test_an_unknown_zone_is_refused_with_indonesian_text_and_a_code(name):
    with pytest.raises(UnknownZone) as err:
        zone(name)
    assert err.value.code == "unknown_time_zone"
    assert str(err.value).startswith("Zona waktu tidak dikenal")


def test_an_unknown_deployment_default_zone_refuses_the_api_settings():
    from pydantic import ValidationError

    from services.cancel_api.config import CancelApiSettings

    with pytest.raises(ValidationError, match="Zona waktu tidak dikenal"):
        CancelApiSettings(CLINIC_TIMEZONE="Asia/Makasar", APP_ENV="test")
    assert CancelApiSettings(CLINIC_TIMEZONE="Asia/Makassar", APP_ENV="test").clinic_timezone
