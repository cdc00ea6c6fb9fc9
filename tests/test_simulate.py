"""Tests of the synthetic-data simulator (training/simulate.py): shape, determinism and its truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.simulate import ATTEMPT_COLUMNS, HARD_CODES, SimulationResult, World, simulate

N = 3000
SEED = 11
STRING_COLUMNS = (
    "invoice_id",
    "customer_id",
    "attempt_id",
    "currency",
    "decline_code",
    "network_decline_code",
    "merchant_advice_code",
    "card_brand",
    "card_funding",
    "card_country",
    "customer_timezone",
    "card_fingerprint",
    "billing_interval",
)
HARD = tuple(code for code, _ in HARD_CODES)


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    """One small simulation shared by the tests."""
    return simulate(N, SEED)


@pytest.fixture(scope="module")
def world(result: SimulationResult) -> World:
    """The truth behind `result`."""
    return World(result.invoices)


def _utc(values: object) -> pd.DatetimeIndex:
    """UTC DatetimeIndex of anything timestamp-like."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True))


def _custom_invoice(result: SimulationResult, **overrides: object) -> World:
    """A one-invoice World: a copy of a simulated invoice with some latent fields overridden."""
    row = result.invoices.iloc[[0]].copy()
    row.index = pd.Index(["in_test"], name=row.index.name)
    defaults = {
        "country": "US",
        "timezone": "America/New_York",
        "root_cause": "insufficient_funds",
        "pay_kind": "weekly",
        "pay_day": 4,  # Friday
        "pay_phase": 0,
        "funds_hour": 3.0,
        "funds_lead_days": 0,
        "prepaid_nonreloadable": False,
        "card_funding": "credit",
        "card_country": "US",
        "updater_refresh_at": pd.NaT,
    }
    for key, value in {**defaults, **overrides}.items():
        row[key] = value
    return World(row)


def test_deterministic_for_a_seed(result: SimulationResult) -> None:
    again = simulate(N, SEED)
    pd.testing.assert_frame_equal(result.attempts, again.attempts)
    pd.testing.assert_frame_equal(result.invoices, again.invoices)
    other = simulate(N, SEED + 1)
    assert not other.attempts["attempt_id"].isin(result.attempts["attempt_id"]).all()


def test_schema_matches_contract(result: SimulationResult) -> None:
    a = result.attempts
    assert tuple(a.columns) == ATTEMPT_COLUMNS
    for name in STRING_COLUMNS:
        assert pd.api.types.is_string_dtype(a[name]), name
    for name in ("attempted_at", "customer_created_at"):
        assert isinstance(a[name].dtype, pd.DatetimeTZDtype) and str(a[name].dt.tz) == "UTC", name
    assert a["amount"].dtype == np.int64 and (a["amount"] > 0).all()
    assert a["succeeded"].dtype == bool
    assert a["card_exp_month"].dtype == np.int64 and a["card_exp_month"].between(1, 12).all()
    assert a["card_exp_year"].dtype == np.int64
    for name in ("invoice_id", "customer_id", "attempt_id", "attempted_at", "amount", "currency", "card_brand"):
        assert a[name].notna().all(), name
    assert a["currency"].str.fullmatch("[a-z]{3}").all()
    assert set(a["billing_interval"]) <= {"month", "year"} and (a["billing_interval"] == "year").any()
    assert set(a["card_funding"]) <= {"credit", "debit", "prepaid", "unknown"}
    # Optional fields are sometimes missing, so the loader's fallbacks get exercised.
    assert 0 < a["customer_timezone"].isna().mean() < 0.3
    assert a["card_country"].dropna().str.fullmatch("[A-Z]{2}").all()
    # Decline fields are there exactly when the attempt failed.
    assert (a["decline_code"].isna() == a["succeeded"]).all()
    assert a.loc[a["succeeded"], ["network_decline_code", "merchant_advice_code"]].isna().all().all()


def test_attempts_ordered_unique_and_stop_after_success(result: SimulationResult) -> None:
    a = result.attempts
    assert a["attempt_id"].is_unique
    assert len(result.invoices) == N == a["invoice_id"].nunique()
    g = a.groupby("invoice_id", sort=False)
    assert (g["attempted_at"].diff().dropna() > pd.Timedelta(0)).all()
    assert not g["succeeded"].head(1).any()  # the first (scheduled) charge failed
    assert (g["succeeded"].cumsum() - a["succeeded"] == 0).all()  # nothing after a success
    assert (a.groupby("invoice_id")["succeeded"].sum() <= 1).all()
    # Rows of an invoice are contiguous.
    runs = (a["invoice_id"] != a["invoice_id"].shift()).sum()
    assert runs == a["invoice_id"].nunique()
    retries = g.size() - 1
    assert (retries <= result.invoices.loc[retries.index, "merchant_max_retries"]).all()


def test_realistic_rates(result: SimulationResult) -> None:
    a = result.attempts
    first = a.groupby("invoice_id").head(1)
    shares = first["decline_code"].value_counts(normalize=True)
    assert 0.6 < shares["insufficient_funds"] + shares["do_not_honor"] < 0.8
    assert 0.04 < first["decline_code"].isin(HARD).mean() < 0.1
    retries = a[a.groupby("invoice_id").cumcount() > 0]
    assert 0.15 < retries["succeeded"].mean() < 0.35
    assert 0.45 < a.groupby("invoice_id")["succeeded"].any().mean() < 0.75
    # Network codes agree with decline codes; advice codes only on Mastercard.
    assert set(a.loc[a["decline_code"] == "insufficient_funds", "network_decline_code"].dropna()) == {"51"}
    assert set(a.loc[a["decline_code"] == "expired_card", "network_decline_code"].dropna()) == {"54"}
    assert (a.loc[a["merchant_advice_code"].notna(), "card_brand"] == "mastercard").all()
    # Multi-subscription customers share a card.
    inv = result.invoices
    per_customer = inv.groupby("customer_id")["card_fingerprint"].agg(["size", "nunique"])
    assert (per_customer["size"] > 1).any() and (per_customer["nunique"] == 1).all()
    assert inv["timezone"].nunique() >= 10


def test_hard_declines_never_succeed(result: SimulationResult, world: World) -> None:
    a = result.attempts
    root = result.invoices.loc[a["invoice_id"], "root_cause"].to_numpy()
    assert not a.loc[root == "hard", "succeeded"].any()
    assert a.loc[root == "hard", "decline_code"].notna().all()
    ids = result.invoices.index[result.invoices["root_cause"] == "hard"].to_numpy()
    at = result.invoices.loc[ids, "first_attempt_at"] + pd.Timedelta(days=3)
    p = world.success_probability(
        ids, at, np.full(ids.size, 2), at - pd.Timedelta(days=2), np.full(ids.size, "lost_card")
    )
    assert (p == 0).all()
    # A hard code is final even if the invoice's latent cause is soft.
    soft = result.invoices.index[result.invoices["root_cause"] == "insufficient_funds"][:50].to_numpy()
    at = result.invoices.loc[soft, "first_attempt_at"] + pd.Timedelta(days=3)
    p = world.success_probability(soft, at, 2, at - pd.Timedelta(days=2), np.full(soft.size, "stolen_card"))
    assert (p == 0).all()


def test_expired_cards_need_the_updater(result: SimulationResult) -> None:
    a = result.attempts
    inv = result.invoices.loc[a["invoice_id"]]
    expired = (inv["root_cause"] == "expired_card").to_numpy()
    refresh = inv["updater_refresh_at"].to_numpy()
    before = expired & ~(a["attempted_at"].to_numpy() >= refresh)
    assert not a.loc[before, "succeeded"].any()
    after = expired & (a["attempted_at"].to_numpy() >= refresh)
    assert after.any()
    assert (a.loc[after, "card_exp_year"].to_numpy() == inv.loc[after, "new_card_exp_year"].to_numpy()).all()
    assert (a.loc[after, "card_exp_year"].to_numpy() > inv.loc[after, "card_exp_year"].to_numpy()).all()


def test_probabilities_bounded_and_parquet_round_trip(result: SimulationResult, world: World, tmp_path) -> None:
    rng = np.random.default_rng(0)
    inv = result.invoices
    ids = rng.choice(inv.index.to_numpy(), 800)
    last = inv.loc[ids, "first_attempt_at"] + pd.to_timedelta(rng.uniform(0, 240, ids.size), unit="h")
    at = last + pd.to_timedelta(rng.uniform(0, 240, ids.size), unit="h")
    prior = rng.integers(1, 8, ids.size)
    codes = rng.choice(["insufficient_funds", "do_not_honor", "processing_error", "card_velocity_exceeded"], ids.size)
    macs = rng.choice(np.array([None, "25", "27", "02"], dtype=object), ids.size)
    p = world.success_probability(ids, at, prior, last, codes, macs)
    assert p.shape == (ids.size,) and ((p >= 0) & (p <= 1)).all() and p.max() > 0.3
    path = tmp_path / "invoices.parquet"
    inv.to_parquet(path)
    again = World(pd.read_parquet(path))
    np.testing.assert_array_equal(again.success_probability(ids, at, prior, last, codes, macs), p)
    np.testing.assert_array_equal(
        again.success_probability(ids, at.to_numpy(), prior, last.to_numpy(), codes),
        world.success_probability(ids, at, prior, last, codes),
    )


def test_mac_retry_after_is_enforced(result: SimulationResult, world: World) -> None:
    inv = result.invoices
    ids = inv.index[inv["root_cause"] == "insufficient_funds"][:200].to_numpy()
    last = inv.loc[ids, "first_attempt_at"]
    mac = np.full(ids.size, "27")  # retry after 4 days
    code = np.full(ids.size, "insufficient_funds")
    early = world.success_probability(ids, last + pd.Timedelta(days=3, hours=23), 1, last, code, mac)
    late = world.success_probability(ids, last + pd.Timedelta(days=4, hours=1), 1, last, code, mac)
    assert (early == 0).all() and (late > 0).all()
    stop = world.success_probability(ids, last + pd.Timedelta(days=5), 1, last, code, np.full(ids.size, "21"))
    assert (stop == 0).all()


def test_insufficient_funds_better_after_payday(result: SimulationResult, world: World) -> None:
    inv = result.invoices
    nsf = inv[(inv["root_cause"] == "insufficient_funds") & ~inv["prepaid_nonreloadable"]]
    ids = nsf.index.to_numpy()
    arrival = world.last_funds_arrival(ids, nsf["first_attempt_at"] + pd.Timedelta(days=20))
    code = np.full(ids.size, "insufficient_funds")

    def prob(at: pd.DatetimeIndex) -> np.ndarray:
        return world.success_probability(ids, at, 2, at - pd.Timedelta(days=3), code)

    before = prob(arrival - pd.Timedelta(days=1))
    assert (prob(arrival + pd.Timedelta(days=1)) > before).all()
    assert (prob(arrival + pd.Timedelta(days=2)) > before).all()
    assert prob(arrival + pd.Timedelta(days=1.5)).mean() > 2 * before.mean()


def test_payday_is_local_time_across_dst(result: SimulationResult) -> None:
    w = _custom_invoice(result)  # weekly on Friday, funds land at 03:00 New York time
    tz = "America/New_York"
    # DST starts on Sunday 2025-03-09: Friday 7th is EST (UTC-5), Friday 14th is EDT (UTC-4).
    for friday in ("2025-03-07", "2025-03-14"):
        local = pd.DatetimeIndex([f"{friday} 02:50", f"{friday} 03:10"]).tz_localize(tz)
        since = w.days_since_payday(np.array(["in_test"] * 2), local.tz_convert("UTC"))
        np.testing.assert_allclose(since, [7 - 10 / 1440, 10 / 1440], atol=1e-9)
        arrival = w.last_funds_arrival(np.array(["in_test"]), local[1:].tz_convert("UTC"))
        assert arrival[0] == pd.Timestamp(f"{friday} 03:00", tz=tz)
    # Monday after the change: three local days since the funds landed, not 3 days minus an hour.
    monday = pd.Timestamp("2025-03-10 03:00", tz=tz).tz_convert("UTC")
    np.testing.assert_allclose(w.days_since_payday(np.array(["in_test"]), pd.DatetimeIndex([monday])), [3.0], atol=1e-9)
    # Same local time after payday on both sides of the change: the same probability.
    at = pd.DatetimeIndex(
        [pd.Timestamp("2025-03-07 05:00", tz=tz), pd.Timestamp("2025-03-14 05:00", tz=tz)]
    ).tz_convert("UTC")
    p = w.success_probability(
        np.array(["in_test"] * 2), at, 2, at - pd.Timedelta(hours=48), np.full(2, "insufficient_funds")
    )
    assert p[0] > 0 and p[0] == pytest.approx(p[1], abs=1e-12)


def test_velocity_resets_at_local_midnight(result: SimulationResult) -> None:
    w = _custom_invoice(result, root_cause="velocity", timezone="Asia/Tokyo", country="JP", card_country="JP")
    tz = "Asia/Tokyo"
    last = pd.DatetimeIndex([pd.Timestamp("2025-05-12 20:00", tz=tz)] * 2).tz_convert("UTC")
    at = pd.DatetimeIndex(
        [pd.Timestamp("2025-05-12 23:30", tz=tz), pd.Timestamp("2025-05-13 00:30", tz=tz)]
    ).tz_convert("UTC")
    p = w.success_probability(np.array(["in_test"] * 2), at, 2, last, np.full(2, "card_velocity_exceeded"))
    assert p[0] < 0.05 < 0.3 < p[1]


def test_exact_hours_fall_in_their_own_hour_band(result: SimulationResult) -> None:
    # Candidate retries sit on whole hours; a float day fraction could read 05:00 as 04:59.99
    # (night). Within an hour nothing else changes for this cause.
    w = _custom_invoice(result, root_cause="none")
    tz = "America/New_York"
    on_hour = pd.date_range("2025-03-07 00:00", periods=72, freq="h", tz=tz).tz_convert("UTC")
    half_past = on_hour + pd.Timedelta(minutes=30)
    last = pd.DatetimeIndex([pd.Timestamp("2025-02-01", tz="UTC")] * 72)
    ids, codes = np.array(["in_test"] * 72), np.full(72, "processing_error")
    p_on = w.success_probability(ids, on_hour, 2, last, codes)
    p_half = w.success_probability(ids, half_past, 2, last, codes)
    np.testing.assert_allclose(p_on, p_half, rtol=0, atol=1e-12)
    assert p_on[5] > p_on[4]  # 05:00 is past the night band, 04:00 is in it


def test_transient_errors_clear_within_hours(result: SimulationResult) -> None:
    w = _custom_invoice(result, root_cause="none")
    last = pd.Timestamp("2025-06-03 14:00", tz="UTC")
    at = pd.DatetimeIndex([last + pd.Timedelta(minutes=10), last + pd.Timedelta(hours=6)])
    p = w.success_probability(
        np.array(["in_test"] * 2), at, 1, pd.DatetimeIndex([last, last]), np.full(2, "processing_error")
    )
    assert p[0] < 0.2 < 0.6 < p[1]


def test_first_attempts_and_decline_draws(result: SimulationResult, world: World) -> None:
    first = world.first_attempts()
    a = result.attempts.groupby("invoice_id").head(1).set_index("invoice_id")
    pd.testing.assert_series_equal(first.loc[a.index, "attempted_at"], a["attempted_at"], check_names=False)
    assert (first.loc[a.index, "decline_code"] == a["decline_code"]).all()
    ids = result.invoices.index[:500].to_numpy()
    at = result.invoices.loc[ids, "first_attempt_at"] + pd.Timedelta(days=2)
    d = world.decline(ids, at, first.loc[ids, "decline_code"].to_numpy(), np.random.default_rng(1))
    assert list(d.columns) == ["decline_code", "network_decline_code", "merchant_advice_code"]
    assert len(d) == ids.size and d["decline_code"].notna().all()
    hard = (result.invoices.loc[ids, "root_cause"] == "hard").to_numpy()
    assert (d.loc[hard, "decline_code"].to_numpy() == result.invoices.loc[ids[hard], "hard_code"].to_numpy()).all()


def test_some_customers_fail_in_several_months(result: SimulationResult) -> None:
    """Repeat failures: a monthly customer's invoices fall on its billing day in distinct months, inside the range."""
    inv = result.invoices
    first = inv["first_attempt_at"]
    assert first.min() >= pd.Timestamp("2025-01-01", tz="UTC") and first.max() < pd.Timestamp("2026-01-01", tz="UTC")
    monthly = inv[inv["billing_interval"] == "month"]
    months = monthly.groupby("customer_id")["first_attempt_at"].agg(lambda s: s.dt.strftime("%Y-%m").nunique())
    assert (months >= 2).mean() > 0.2  # a good share fail again in a later month
    # One subscription per customer: one invoice per month, on the same day of the month (or the month's last).
    single = monthly.groupby("customer_id").filter(
        lambda g: len(g) == g["first_attempt_at"].dt.strftime("%Y-%m").nunique()
    )
    days = single.groupby("customer_id")["first_attempt_at"].agg(
        lambda s: s.dt.day.min() == s.dt.day.max() or s.dt.day.max() >= 28
    )
    assert days.mean() > 0.97
