"""Tests of the closed-loop policy evaluation (training/evaluate.py) and its baselines (training/baselines.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.taxonomy import is_hard_decline
from serving.settings import Settings
from training.baselines import (
    FIXED_SCHEDULES,
    NAT,
    NS_PER_DAY,
    NS_PER_HOUR,
    HyperswitchModel,
    LoopState,
    candidate_slots,
    cumulative_days,
    fixed_schedule,
    hyperswitch_policy,
    laplace_rate,
    masked_softmax,
    payday_heuristic,
    relative_scores,
    slot_weights,
    spread_days,
)
from training.evaluate import (
    FIXED_POLICIES,
    POLICIES,
    CalendarBlindScorer,
    EvaluationConfig,
    EvaluationResult,
    HeldOut,
    OracleScorer,
    RuleChecker,
    breakdown,
    build_policy,
    decision_requests,
    earlier_attempts_log_likelihood,
    format_table,
    held_out_world,
    log_evaluation,
    policy_names,
    run_evaluation,
    run_policy,
    save_chart,
)
from training.simulate import COUNTRIES, PAY_CALENDAR_COLUMNS, simulate
from training.train import TrainConfig, train_model

# A small world with a budget and window tighter than the defaults, so both limits bite.
CONFIG = EvaluationConfig(invoices=240, seed=5, max_retries=3, window_days=10, history_invoices=3000, batch_size=100)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on simulated history, once for the module."""
    out = tmp_path_factory.mktemp("bundle")
    train_model(simulate(3000, 1).attempts, out, TrainConfig(num_boost_round=30))
    return out


@pytest.fixture(scope="module")
def result(bundle_dir: Path) -> EvaluationResult:
    """Every policy on the same small held-out world."""
    return run_evaluation(bundle_dir, CONFIG)


@pytest.fixture(scope="module")
def checker() -> RuleChecker:
    """One rule checker for the module: its memo is pure, sharing it only saves time."""
    return RuleChecker(Settings())


@pytest.fixture(scope="module")
def held() -> HeldOut:
    """The held-out world of CONFIG."""
    return held_out_world(CONFIG)


def _state(first: list[str], last: list[str], retries: list[int], zone: str = "America/New_York") -> LoopState:
    """A hand-made loop state: invoices with a first failure, a last attempt and retries made so far."""
    n = len(first)
    budget = 4
    times = np.full((n, budget + 1), NAT, dtype=np.int64)
    times[:, 0] = pd.DatetimeIndex(first, tz="UTC").as_unit("ns").asi8
    for i, k in enumerate(retries):
        times[i, k] = pd.Timestamp(last[i], tz="UTC").as_unit("ns").value
    codes = np.full((n, budget + 1), None, dtype=object)
    codes[:, :] = "insufficient_funds"
    context = pd.DataFrame({"customer_timezone": [zone] * n, "card_country": ["US"] * n, "card_brand": ["visa"] * n})
    return _loop_state(np.array([f"in_{i}" for i in range(n)], dtype=object), context, retries, times, codes)


def _loop_state(
    ids: np.ndarray, context: pd.DataFrame, retries: object, times: np.ndarray, codes: np.ndarray
) -> LoopState:
    """A loop state of a 14-day window from attempt times and decline codes (no network or advice codes)."""
    shape = times.shape
    return LoopState(
        invoice_ids=ids,
        context=context,
        retries_made=np.asarray(retries, dtype=np.int64),
        max_retries=shape[1] - 1,
        window_end=times[:, 0] + 14 * NS_PER_DAY,
        times=times,
        decline_codes=codes,
        network_codes=np.full(shape, None, dtype=object),
        advice_codes=np.full(shape, None, dtype=object),
    )


def _policy_rows(result: EvaluationResult, name: str) -> pd.DataFrame:
    """One policy's per-invoice rows, by invoice id."""
    return result.per_invoice[result.per_invoice["policy"] == name].set_index("invoice_id")


# ---------------------------------------------------------------------------------------------
# The loop: common random numbers, budget and window.
# ---------------------------------------------------------------------------------------------
def test_held_out_world_is_reproducible() -> None:
    """Same config, same invoices and dice; the dice differ by seed."""
    a, b = held_out_world(CONFIG), held_out_world(CONFIG)
    assert (a.invoice_ids == b.invoice_ids).all()
    np.testing.assert_array_equal(a.uniforms, b.uniforms)
    assert a.uniforms.shape == (CONFIG.invoices, CONFIG.max_retries)
    other = held_out_world(EvaluationConfig(invoices=CONFIG.invoices, seed=6, max_retries=CONFIG.max_retries))
    assert not np.array_equal(a.uniforms, other.uniforms)


@pytest.mark.parametrize("name", ["fixed_1_3_5_7", "payday_heuristic"])
def test_a_policy_run_twice_gives_identical_results(held: HeldOut, checker: RuleChecker, name: str) -> None:
    """Common random numbers: outcomes and decline draws are a function of (seed, invoice, round)."""
    policy = fixed_schedule(FIXED_SCHEDULES[name]) if name in FIXED_SCHEDULES else lambda state: payday_heuristic(state)
    first = run_policy(held, policy, CONFIG, checker)
    second = run_policy(held, policy, CONFIG, RuleChecker(Settings()))  # a fresh memo gives the same verdicts
    np.testing.assert_array_equal(first.times, second.times)
    np.testing.assert_array_equal(first.recovered, second.recovered)
    np.testing.assert_array_equal(first.violations, second.violations)


def test_the_learned_policy_decides_the_same_with_the_compiled_model(
    bundle_dir: Path, held: HeldOut, checker: RuleChecker, tmp_path: Path
) -> None:
    """With compiled inference on, evaluate compiles the model first and every retry lands where LightGBM's would."""
    runs = {}
    for compiled in (False, True):
        settings = Settings(compiled_inference=compiled, compiled_cache_dir=tmp_path / "compiled")
        policy, _ = build_policy("learned", bundle_dir, CONFIG, held, settings)
        runs[compiled] = run_policy(held, policy, CONFIG, checker)
    assert list((tmp_path / "compiled").glob("*.so")), "the model was not compiled"
    np.testing.assert_array_equal(runs[True].times, runs[False].times)
    np.testing.assert_array_equal(runs[True].recovered, runs[False].recovered)


def test_the_same_retry_gets_the_same_outcome_under_two_policies(held: HeldOut) -> None:
    """Two ladders that share the first retry time share its outcome: the same uniform decides it."""
    a = run_policy(held, fixed_schedule((1, 3, 5)), CONFIG, RuleChecker(Settings()), check_rules=False)
    b = run_policy(held, fixed_schedule((1, 4, 8)), CONFIG, RuleChecker(Settings()), check_rules=False)
    np.testing.assert_array_equal(a.times[:, 1], b.times[:, 1])
    np.testing.assert_array_equal(a.recovered & (a.retries == 1), b.recovered & (b.retries == 1))
    assert (a.recovered & (a.retries == 1)).any()
    assert not np.array_equal(a.times[:, 2], b.times[:, 2])


def test_no_policy_exceeds_the_budget_or_the_window(result: EvaluationResult) -> None:
    """At most max_retries retries, all within window_days of the first failure, for every policy."""
    rows = result.per_invoice
    assert set(rows["policy"]) == set(POLICIES)
    assert rows["retries"].max() <= CONFIG.max_retries
    assert (rows["retries"] == CONFIG.max_retries).any()  # the budget binds for someone
    span = rows["last_attempt_at"] - rows["first_failure_at"]
    assert (span <= pd.Timedelta(days=CONFIG.window_days)).all()
    recovered = rows[rows["recovered"]]
    assert (recovered["recovered_at"] == recovered["last_attempt_at"]).all()  # no retry after a success


def test_fixed_schedules_retry_at_the_exact_days(held: HeldOut) -> None:
    """Retry k lands at first failure + days[k], same clock time, until success, budget or window."""
    days = FIXED_SCHEDULES["fixed_1_3_5_7"]
    run = run_policy(held, fixed_schedule(days), CONFIG, RuleChecker(Settings()), check_rules=False)
    first = run.times[:, 0]
    for k in range(1, CONFIG.max_retries + 1):
        made = run.retries >= k
        np.testing.assert_array_equal(run.times[made, k] - first[made], int(days[k - 1] * NS_PER_DAY))
    # Those still failing retry the whole budget (every day of the ladder is inside the 10-day window).
    assert (run.retries[~run.recovered] == CONFIG.max_retries).all()


def test_fixed_schedule_ladders() -> None:
    """The ladders of the peers' defaults."""
    assert spread_days(8, 14) == (2, 4, 5, 7, 9, 11, 12, 14)
    assert cumulative_days((2, 5, 7, 7)) == (2, 7, 14, 21)
    state = _state(
        ["2026-03-01T08:30:00"] * 3, ["2026-03-01T08:30:00", "2026-03-04T08:30:00", "2026-03-07T00:00"], [0, 2, 4]
    )
    out = fixed_schedule((1, 3, 5, 7))(state)
    assert pd.Timestamp(out[0], tz="UTC") == pd.Timestamp("2026-03-02T08:30:00Z")
    assert pd.Timestamp(out[1], tz="UTC") == pd.Timestamp("2026-03-06T08:30:00Z")
    assert out[2] == NAT  # past the ladder


def test_payday_heuristic_picks_the_next_1st_15th_or_friday_at_10_local() -> None:
    """Thu morning → Fri 13th; Thu evening → Sun 15th (Friday 10:00 is within 24 h); Mon 30th → Wed 1st."""
    state = _state(
        ["2026-03-01T00:00:00"] * 3,
        ["2026-03-12T10:00:00", "2026-03-12T22:00:00", "2026-03-30T12:00:00"],
        [1, 1, 1],
    )
    out = pd.DatetimeIndex(payday_heuristic(state).view("M8[ns]")).tz_localize("UTC").tz_convert("America/New_York")
    assert list(out.strftime("%Y-%m-%d %H:%M")) == ["2026-03-13 10:00", "2026-03-15 10:00", "2026-04-01 10:00"]


# ---------------------------------------------------------------------------------------------
# Rules: the served policies never break them; a naive schedule does and is counted.
# ---------------------------------------------------------------------------------------------
def test_learned_and_oracle_break_no_rule(result: EvaluationResult) -> None:
    """They go through decide_batch, which enforces the rules table."""
    table = result.table.set_index("policy")
    violations, retries = table["rule_violations"].to_dict(), table["retries_per_invoice"].to_dict()
    assert violations["learned"] == 0
    assert violations["oracle"] == 0
    assert retries["learned"] > 0


def test_a_naive_schedule_retrying_hard_declines_is_counted_as_violating(result: EvaluationResult) -> None:
    """Every retry of a hard-declined invoice is forbidden by the rules table, and counted."""
    rows = _policy_rows(result, "fixed_1_3_5_7")
    hard = is_hard_decline(rows["first_decline_code"]).to_numpy()
    assert hard.any()
    assert (rows.loc[hard, "recovered"] == 0).all()  # the truth never approves a hard decline
    np.testing.assert_array_equal(rows.loc[hard, "violations"], rows.loc[hard, "retries"])
    assert (rows.loc[hard, "retries"] == CONFIG.max_retries).all()


# ---------------------------------------------------------------------------------------------
# The oracle and the table.
# ---------------------------------------------------------------------------------------------
def test_the_oracle_recovers_at_least_as_many_as_every_fixed_schedule(result: EvaluationResult) -> None:
    """Knowing the truth (with the same rules and planner) beats every fixed ladder on the same invoices."""
    rate = result.table.set_index("policy")["recovery_rate"]
    for name in FIXED_POLICIES:
        assert rate["oracle"] >= rate[name], name


def test_table_holds_every_metric_and_uplift_is_relative_to_the_best_fixed_schedule(result: EvaluationResult) -> None:
    """Uplift capture is 0 for the best fixed schedule and 1 for the oracle."""
    table = result.table.set_index("policy")
    for column in (
        "invoices",
        "recovery_rate",
        "amount_recovery_rate",
        "median_days_to_recovery",
        "retries_per_invoice",
        "retries_per_recovery",
        "rule_violations",
        "uplift_capture",
    ):
        assert column in table.columns
    rate, capture = table["recovery_rate"].to_dict(), table["uplift_capture"].to_dict()
    best = max(FIXED_POLICIES, key=lambda name: rate[name])
    assert capture[best] == pytest.approx(0.0)
    assert capture["oracle"] == pytest.approx(1.0)
    assert (table["invoices"] == CONFIG.invoices).all()
    assert "learned" in format_table(result)


def test_save_chart_writes_a_png(result: EvaluationResult, tmp_path: Path) -> None:
    """The chart is a PNG file."""
    path = save_chart(result, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_policy_is_refused(bundle_dir: Path) -> None:
    """A typo names the known policies instead of silently evaluating nothing."""
    with pytest.raises(ValueError, match="known"):
        run_evaluation(bundle_dir, CONFIG, policies=["learnd"])


def test_the_diagnostic_policy_runs_only_when_asked() -> None:
    """The default set leaves out oracle_without_calendar; naming it runs it; a typo is refused."""
    assert "oracle_without_calendar" not in policy_names(None)
    assert policy_names(["oracle", "oracle_without_calendar"]) == ["oracle", "oracle_without_calendar"]
    with pytest.raises(ValueError, match="oracle_without_calendar"):
        policy_names(["oracle_without_calender"])


# ---------------------------------------------------------------------------------------------
# The oracle without the customer's pay calendar (a diagnostic policy).
# ---------------------------------------------------------------------------------------------
def test_redrawn_calendars_keep_everything_but_the_pay_calendar(held: HeldOut) -> None:
    """Copy s of invoice i keeps its latents; its calendar is one of its country's (not always its own)."""
    original = held.world.invoices
    copies = held.world.with_calendars_redrawn(3, np.random.default_rng(0)).invoices
    n = len(original)
    assert len(copies) == 3 * n and copies.index.is_unique
    kept = [c for c in original.columns if c not in PAY_CALENDAR_COLUMNS]
    for s in range(3):
        part = copies.iloc[s * n : (s + 1) * n]
        pd.testing.assert_frame_equal(part[kept].reset_index(drop=True), original[kept].reset_index(drop=True))
    for country, kind, day in zip(copies["country"], copies["pay_kind"], copies["pay_day"], strict=True):
        assert (kind, day) in {(k, d) for k, d, _ in COUNTRIES[country].paydays}
    assert (copies["pay_kind"].to_numpy()[:n] != original["pay_kind"].to_numpy()).any()


def _first_decisions(held: HeldOut) -> tuple[list, pd.DataFrame]:  # type: ignore[type-arg]
    """Each held-out invoice's first decision request, and hourly slots over the next 10 days."""
    n, budget = len(held.invoice_ids), CONFIG.max_retries
    times = np.full((n, budget + 1), NAT, dtype=np.int64)
    times[:, 0] = pd.DatetimeIndex(held.first_attempts["attempted_at"]).as_unit("ns").asi8
    codes = np.full((n, budget + 1), None, dtype=object)
    codes[:, 0] = held.first_attempts["decline_code"].astype(object).where(held.first_attempts["decline_code"].notna())
    state = _loop_state(held.invoice_ids, held.context, np.zeros(n), times, codes)
    requests = decision_requests(state, held.world)
    hours = np.arange(1, 241)
    slots = pd.DataFrame(
        {
            "request": np.repeat(np.arange(n), hours.size),
            "retry_index": 0,
            "candidate_at": pd.DatetimeIndex(
                np.repeat(times[:, 0], hours.size) + np.tile(hours, n) * NS_PER_HOUR, tz="UTC"
            ),
        }
    )
    return requests, slots


def test_the_calendar_blind_oracle_is_the_oracle_where_the_calendar_cannot_matter(held: HeldOut) -> None:
    """Velocity, hard and no-cause invoices' truth has no payday term: redrawing the calendar changes nothing."""
    requests, slots = _first_decisions(held)
    calendars = held.world.with_calendars_redrawn(4, np.random.default_rng(1))
    blind = CalendarBlindScorer(held.world, calendars, requests, 24).score(slots, pd.DataFrame())
    truth = OracleScorer(held.world, requests, 24).score(slots, pd.DataFrame())
    cause = held.world.invoices["root_cause"].astype(str).to_numpy()[slots["request"].to_numpy()]
    no_payday = np.isin(cause, ["velocity", "hard", "none"])
    assert no_payday.sum() > 0
    np.testing.assert_allclose(blind[no_payday], truth[no_payday], atol=1e-12)
    assert not np.allclose(blind[cause == "insufficient_funds"], truth[cause == "insufficient_funds"])


def test_weighing_calendars_by_the_declines_seen_brings_the_blind_oracle_closer_to_the_truth(held: HeldOut) -> None:
    """An insufficient-funds first failure says where in the pay period the customer was: using it helps."""
    requests, slots = _first_decisions(held)
    calendars = held.world.with_calendars_redrawn(16, np.random.default_rng(2))
    scorer = CalendarBlindScorer(held.world, calendars, requests, 24)
    np.testing.assert_allclose(scorer.weights.sum(axis=1), 1.0)
    truth = OracleScorer(held.world, requests, 24).score(slots, pd.DataFrame())
    weighted = scorer.score(slots, pd.DataFrame())
    scorer.weights = np.full_like(scorer.weights, 1.0 / scorer.weights.shape[1])  # the country's mix alone
    unweighted = scorer.score(slots, pd.DataFrame())
    nsf = held.world.invoices["root_cause"].astype(str).to_numpy()[slots["request"].to_numpy()] == "insufficient_funds"
    assert np.abs(weighted - truth)[nsf].mean() < np.abs(unweighted - truth)[nsf].mean()


def test_the_customers_earlier_invoices_move_the_calendar_weights_towards_the_truth(held: HeldOut) -> None:
    """Earlier attempts of the same customer are evidence of its calendar: only invoices with them change."""
    requests, slots = _first_decisions(held)
    calendars = held.world.with_calendars_redrawn(16, np.random.default_rng(3))
    earlier = earlier_attempts_log_likelihood(held, calendars)
    has_earlier = (earlier != 0).any(axis=1)
    assert 0 < has_earlier.sum() < len(held.invoice_ids)
    alone = CalendarBlindScorer(held.world, calendars, requests, 24)
    with_history = CalendarBlindScorer(held.world, calendars, requests, 24, earlier)
    np.testing.assert_allclose(with_history.weights[~has_earlier], alone.weights[~has_earlier])
    assert not np.allclose(with_history.weights[has_earlier], alone.weights[has_earlier])
    truth = OracleScorer(held.world, requests, 24).score(slots, pd.DataFrame())
    rows = slots["request"].to_numpy()
    nsf = held.world.invoices["root_cause"].astype(str).to_numpy()[rows] == "insufficient_funds"
    mask = nsf & has_earlier[rows]
    error_with = np.abs(with_history.score(slots, pd.DataFrame()) - truth)[mask].mean()
    assert error_with < np.abs(alone.score(slots, pd.DataFrame()) - truth)[mask].mean()


def test_the_oracle_without_calendar_breaks_no_rule(bundle_dir: Path, held: HeldOut, checker: RuleChecker) -> None:
    """The diagnostic policy decides through the same rules and planner: no violation, within budget."""
    policy, _ = build_policy("oracle_without_calendar", bundle_dir, CONFIG, held, Settings())
    run = run_policy(held, policy, CONFIG, checker)
    assert run.violations.sum() == 0
    assert (run.retries <= CONFIG.max_retries).all()


# ---------------------------------------------------------------------------------------------
# hyperswitch's slot scorer.
# ---------------------------------------------------------------------------------------------
def test_laplace_rates_and_relative_scores_favour_the_better_slot() -> None:
    """A slot with a higher smoothed rate scores highest; untried slots stay neutral."""
    trials = np.array([100.0, 100.0, 100.0, 0.0])
    wins = np.array([10.0, 30.0, 10.0, 0.0])
    np.testing.assert_allclose(laplace_rate(wins, trials), [11 / 102, 31 / 102, 11 / 102, 0.5])
    scores = relative_scores(wins, trials)
    assert scores.argmax() == 1
    assert scores[0] == pytest.approx(scores[2])
    assert scores[3] == 0.0


def test_masked_softmax_sums_to_one_over_the_mask() -> None:
    """Masked entries get no weight."""
    weights = masked_softmax(np.array([[1.0, 2.0, 3.0]]), np.array([[True, True, False]]))
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0, 2] == 0.0
    assert weights[0, 1] > weights[0, 0]


def _flat_model(hour_scores: np.ndarray) -> HyperswitchModel:
    """A model with neutral calendar days and the given hour scores."""
    axes = {"local_weekday": np.zeros(7), "local_day": np.zeros(31), "local_hour": hour_scores}
    return HyperswitchModel({"*": axes})


def test_hyperswitch_slot_weights_are_a_softmax_favouring_the_better_hour() -> None:
    """Weights over an invoice's candidate slots sum to 1 and peak at the hour with the higher rate."""
    trials = np.full(24, 200.0)
    wins = np.full(24, 20.0)
    wins[6] = 60.0  # 06:00 local succeeds three times as often
    model = _flat_model(relative_scores(wins, trials))
    earliest = pd.DatetimeIndex(["2026-03-02T15:00:00"], tz="UTC").as_unit("ns").asi8
    slots = candidate_slots(earliest, earliest + 5 * NS_PER_DAY, pd.Series(["America/Chicago"]))
    weights = slot_weights(model, np.array(["insufficient_funds"], dtype=object), slots)
    assert weights.sum() == pytest.approx(1.0)
    assert (weights[~slots.valid] == 0).all()
    best = pd.Timestamp(slots.utc[0, weights[0].argmax()], tz="UTC").tz_convert("America/Chicago")
    assert best.hour == 6


def test_hyperswitch_policy_keeps_spacing_and_room_for_the_budget() -> None:
    """At least 24 h after the last attempt, and early enough for the retries left at 24 h apart."""
    model = _flat_model(np.zeros(24))
    state = _state(["2026-03-01T12:00:00"] * 2, ["2026-03-01T12:00:00", "2026-03-12T12:00:00"], [0, 2])
    out = hyperswitch_policy(model)(state)
    assert (out >= state.last_at + 24 * NS_PER_HOUR).all()
    left_after = state.max_retries - state.retries_made - 1
    assert (out <= state.window_end - left_after * 24 * NS_PER_HOUR).all()


def test_breakdown_by_root_cause_covers_every_invoice(result: EvaluationResult) -> None:
    """One row per root cause, one column per policy; hard declines are never recovered."""
    table = breakdown(result)
    assert table["invoices"].sum() == CONFIG.invoices
    assert set(POLICIES) <= set(table.columns)
    assert (table.loc["hard", list(POLICIES)] == 0).all()


def test_log_evaluation_records_metrics_and_artifacts(
    result: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MLflow run with a metric per policy and the table, breakdown, chart and per-invoice rows."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    monkeypatch.chdir(tmp_path)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
        mlflow.create_experiment("evaluation", artifact_location=(tmp_path / "artifacts").as_uri())
        mlflow.set_experiment("evaluation")
        run_id = log_evaluation(result, CONFIG)
        assert run_id is not None
        run = mlflow.get_run(run_id)
        assert run.data.metrics["oracle.recovery_rate"] == pytest.approx(
            result.table.set_index("policy")["recovery_rate"].to_dict()["oracle"]
        )
        assert run.data.params["eval.invoices"] == str(CONFIG.invoices)
        files = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="evaluation")}
        assert {
            "evaluation/table.txt",
            "evaluation/table.csv",
            "evaluation/recovery_by_root_cause.csv",
            "evaluation/recovery.png",
            "evaluation/per_invoice.csv",
        } <= files
    finally:
        mlflow.set_tracking_uri(previous)
