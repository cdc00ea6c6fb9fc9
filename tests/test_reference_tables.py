"""The country and currency reference tables, checked against tzdata and ISO 4217 facts."""

from __future__ import annotations

import math
import zoneinfo
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from features import geo, money


def _tzdata_table(name: str) -> list[list[str]]:
    """Rows of one of tzdata's tab-separated tables, comments left out."""
    text = (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


def test_countries_are_iso_3166_alpha2_plus_kosovo() -> None:
    official = {row[0] for row in _tzdata_table("iso3166.tab")}
    assert len(official) == 249
    assert official | {"XK"} == geo.COUNTRIES
    assert all(len(code) == 2 and code.isupper() for code in geo.COUNTRIES)


def test_every_inhabited_country_has_a_valid_default_zone() -> None:
    with_zones = {row[0] for row in _tzdata_table("zone.tab")}
    assert with_zones <= set(geo.DEFAULT_TIMEZONE)
    assert set(geo.DEFAULT_TIMEZONE) <= geo.COUNTRIES
    available = zoneinfo.available_timezones()
    assert set(geo.DEFAULT_TIMEZONE.values()) <= available


@pytest.mark.parametrize(
    ("country", "zone"),
    [
        ("US", "America/Chicago"),
        ("GB", "Europe/London"),
        ("JP", "Asia/Tokyo"),
        ("BR", "America/Sao_Paulo"),
        ("RU", "Europe/Moscow"),
        ("AU", "Australia/Sydney"),
        ("CA", "America/Toronto"),
        ("NA", "Africa/Windhoek"),
    ],
)
def test_big_countries_get_their_most_populous_zone(country: str, zone: str) -> None:
    assert geo.DEFAULT_TIMEZONE[country] == zone


def test_is_valid_timezone() -> None:
    assert geo.is_valid_timezone("Europe/Paris")
    assert geo.is_valid_timezone("UTC")
    assert not geo.is_valid_timezone("Mars/Olympus_Mons")
    assert not geo.is_valid_timezone("europe/paris")  # exact spelling only
    assert geo.timezone_by_lower_name()["europe/paris"] == "Europe/Paris"


def test_resolve_timezones_prefers_given_then_country_then_utc() -> None:
    tz = pd.Series(["Europe/Paris", None, None, "", None, np.nan])
    country = pd.Series(["US", "us", "ZZ", "JP", None, "BV"])
    resolved = geo.resolve_timezones(tz, country)
    assert resolved.tolist() == ["Europe/Paris", "America/Chicago", "UTC", "Asia/Tokyo", "UTC", "UTC"]
    assert resolved.notna().all()


def test_resolve_timezones_on_empty_and_all_missing_series() -> None:
    assert geo.resolve_timezones(pd.Series([], dtype="str"), pd.Series([], dtype="str")).empty
    all_missing = pd.Series([np.nan, np.nan])
    assert geo.resolve_timezones(all_missing, all_missing).tolist() == ["UTC", "UTC"]


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("jpy", 0), ("krw", 0), ("vnd", 0), ("clp", 0), ("usd", 2), ("eur", 2), ("bhd", 3), ("kwd", 3), ("clf", 4)],
)
def test_currency_exponents(currency: str, exponent: int) -> None:
    assert money.CURRENCY_EXPONENTS[currency] == exponent


def test_currency_table_shape() -> None:
    codes = money.CURRENCY_EXPONENTS
    assert all(len(code) == 3 and code.islower() for code in codes)
    assert set(codes.values()) <= {0, 2, 3, 4}
    assert "xau" not in codes  # metals have no minor unit
    assert len(money.USD_PER_UNIT) >= 30
    assert set(money.USD_PER_UNIT) <= set(codes)
    assert all(rate > 0 for rate in money.USD_PER_UNIT.values())


def test_amount_usd_uses_exponent_and_rate() -> None:
    amounts = pd.Series([4900, 1000, 1000, 500, 7], dtype="int64")
    currencies = pd.Series(["usd", "JPY", "bhd", "xyz", "mga"])
    usd = money.amount_usd(amounts, currencies)
    assert usd.dtype == "float64"
    assert usd.iloc[0] == pytest.approx(49.0)
    assert usd.iloc[1] == pytest.approx(1000 * money.USD_PER_UNIT["jpy"])
    assert math.isnan(usd.iloc[2])  # known exponent, no rate
    assert math.isnan(usd.iloc[3])  # unknown currency
    assert math.isnan(usd.iloc[4])


def test_amount_usd_accepts_nullable_and_string_dtypes() -> None:
    amounts = pd.Series([100, None], dtype="Int64")
    currencies = pd.Series(["eur", None], dtype="string")
    usd = money.amount_usd(amounts, currencies)
    assert usd.iloc[0] == pytest.approx(money.USD_PER_UNIT["eur"])
    assert math.isnan(usd.iloc[1])
