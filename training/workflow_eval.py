"""Closed-loop evaluation of the recovery workflow for customers with several invoices on one card.

`training.evaluate` replays policies round by round, each invoice on its own. Per-card caps, joint
planning and "a paid invoice brings its siblings' retries forward" only show when the invoices of
one card are replayed together in time order, so this module runs an event loop per card: a
charge happens when its retry is due, the scheduler asks for a decision five minutes after each
failure (and after a card-update event, and — with per-card planning — after another invoice on
the card is paid), and the decision sees what a store would hold at that moment. All cards advance
in lockstep, one event per card per step, so each step's decisions go to `decide_batch` together.

Variants (all the served policy with the same model, dice and held-out invoices):
* `independent`: every invoice decided alone (no card history), card updates on;
* `per_card`: card history from the simulated store, siblings re-asked after a success;
* `per_card_no_updates`: as `per_card`, but the account updater's refreshes are never reported.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serving.policy.card import NO_HISTORY, CardAttempt, CardHistory
from serving.policy.rules import cap_breaches
from serving.policy.scoring import Scorer
from serving.settings import Settings
from training.baselines import NAT, NS_PER_DAY, NS_PER_HOUR, LoopState
from training.evaluate import (
    DECISION_DELAY,
    EvaluationConfig,
    HeldOut,
    _as_codes,
    _index,
    _utc_ns,
    customer_columns,
    decision_requests,
    held_out_world,
)

VARIANTS: dict[str, tuple[bool, bool]] = {  # name: (per-card planning, card updates reported)
    "independent": (False, True),
    "per_card": (True, True),
    "per_card_no_updates": (True, False),
}
_DECLINE_STREAM = 3
_ASK, _CHARGE, _UPDATE = 0, 1, 2
DELAY_NS = int(DECISION_DELAY.value)


@dataclass(frozen=True)
class WorkflowRun:
    """What one variant did to the multi-invoice cards."""

    recovered: np.ndarray
    recovered_at: np.ndarray  # ns, NAT when not recovered
    retries: np.ndarray
    after_update: np.ndarray  # recovered by a retry that followed a reported card update
    after_sibling: np.ndarray  # recovered by a retry asked for after another invoice on the card was paid
    cap_breaches: int
    same_hour_pairs: int  # two retries of one card less than an hour apart
    decisions: int
    seconds: float


def multi_invoice_cards(held: HeldOut) -> HeldOut:
    """The held-out invoices whose card (fingerprint) carries at least two of them."""
    fingerprints = held.context["card_fingerprint"]
    shared = fingerprints.notna() & fingerprints.duplicated(keep=False)
    rows = np.flatnonzero(shared.to_numpy())
    return HeldOut(
        world=held.world,
        invoice_ids=held.invoice_ids[rows],
        context=held.context.iloc[rows].reset_index(drop=True),
        first_attempts=held.first_attempts.iloc[rows].reset_index(drop=True),
        uniforms=held.uniforms[rows],
        seed=held.seed,
        card_updated_at=None if held.card_updated_at is None else held.card_updated_at[rows],
    )


class _Loop:
    """The state of one variant's replay: attempts per invoice and the event queue per card."""

    def __init__(self, held: HeldOut, config: EvaluationConfig, per_card: bool, updates: bool) -> None:
        n, budget = len(held.invoice_ids), config.max_retries
        first = held.first_attempts
        self.held, self.config, self.per_card = held, config, per_card
        self.times = np.full((n, budget + 1), NAT, dtype=np.int64)
        self.codes = np.full((n, budget + 1), None, dtype=object)
        self.network = np.full((n, budget + 1), None, dtype=object)
        self.advice = np.full((n, budget + 1), None, dtype=object)
        self.times[:, 0] = _utc_ns(first["attempted_at"])
        self.codes[:, 0] = _as_codes(first["decline_code"])
        self.network[:, 0] = _as_codes(first["network_decline_code"])
        self.advice[:, 0] = _as_codes(first["merchant_advice_code"])
        self.window_end = self.times[:, 0] + int(config.window_days * NS_PER_DAY)
        self.retries = np.zeros(n, dtype=np.int64)
        self.recovered = np.zeros(n, dtype=bool)
        self.recovered_at = np.full(n, NAT, dtype=np.int64)
        self.planned = np.full(n, NAT, dtype=np.int64)
        self.update_known = np.full(n, NAT, dtype=np.int64)
        self.after_update = np.zeros(n, dtype=bool)
        self.after_sibling = np.zeros(n, dtype=bool)
        self.asked = np.zeros(n, dtype=bool)  # asked about at least once (its first failure reported)
        self.sibling_asked = np.zeros(n, dtype=bool)  # an ask is queued because another invoice was paid
        self.planned_after_sibling = np.zeros(n, dtype=bool)  # the pending retry came from such an ask
        cards = held.context["card_fingerprint"].astype(str).to_numpy()
        self.card_of = cards
        self.members: dict[str, list[int]] = defaultdict(list)
        for i, card in enumerate(cards):
            self.members[card].append(i)
        self.queues: dict[str, list[tuple[int, int, int]]] = {card: [] for card in self.members}
        for i in range(n):
            self.push(i, int(self.times[i, 0]) + DELAY_NS, _ASK)
            refresh = NAT if held.card_updated_at is None else int(held.card_updated_at[i])
            if updates and refresh != NAT and refresh + DELAY_NS < self.window_end[i]:
                self.push(i, refresh + DELAY_NS, _UPDATE)

    def push(self, i: int, at: int, kind: int) -> None:
        """Queue an event of invoice i on its card."""
        heapq.heappush(self.queues[self.card_of[i]], (at, kind, i))

    def open(self, i: int, at: int) -> bool:
        """Failed before `at` (an invoice of a later month on the card has not yet), not recovered, window open."""
        return not self.recovered[i] and int(self.times[i, 0]) < at < self.window_end[i]

    def history(self, i: int, now: int) -> CardHistory:
        """What the store would tell about invoice i's card at `now`: the other invoices' attempts and plans."""
        if not self.per_card:
            return NO_HISTORY
        attempts, planned = [], []
        for j in self.members[self.card_of[i]]:
            if j == i:
                continue
            for r in range(int(self.retries[j]) + 1):
                at = int(self.times[j, r])
                if at <= now:
                    ok = bool(self.recovered[j]) and at == int(self.recovered_at[j])
                    attempts.append(CardAttempt(_index(np.array([at]))[0], str(self.held.invoice_ids[j]), r == 0, ok))
            if self.planned[j] != NAT and self.planned[j] > now and not self.recovered[j]:
                planned.append((str(self.held.invoice_ids[j]), _index(np.array([self.planned[j]]))[0]))
        return CardHistory(attempts=tuple(attempts), planned=tuple(planned))


def _replan_siblings(loop: _Loop, i: int, at: int) -> None:
    """A new invoice failed on the card: its first decline counts in the caps, so re-plan the others' retries.

    A scheduler running per-card planning asks again for the card's open invoices with a pending
    retry when another invoice on the card fails for the first time (retries are planned knowing
    each other; first charges are the merchant's and arrive unannounced).
    """
    for s in loop.members[loop.card_of[i]]:
        if s != i and loop.planned[s] != NAT and loop.open(s, at):
            loop.push(s, at, _ASK)


def _charge(loop: _Loop, rows: list[int], at: list[int], step: int) -> None:
    """Make the due retries: success from the true probability and the shared dice, else new decline codes."""
    held, world = loop.held, loop.held.world
    idx, when = np.array(rows), np.array(at, dtype=np.int64)
    r = loop.retries[idx]
    last = loop.times[idx, r]
    p = world.success_probability(
        held.invoice_ids[idx], _index(when), r + 1, _index(last), loop.codes[idx, r], loop.advice[idx, r]
    )
    ok = held.uniforms[idx, r] < p
    rng = np.random.default_rng([held.seed, _DECLINE_STREAM, step])
    declines = world.decline(held.invoice_ids[idx], _index(when), loop.codes[idx, r], rng, last_attempt_at=_index(last))
    for j, (i, t, success) in enumerate(zip(rows, at, ok, strict=True)):
        k = int(loop.retries[i]) + 1
        loop.times[i, k], loop.retries[i], loop.planned[i] = t, k, NAT
        updated = loop.update_known[i]
        if success:
            loop.recovered[i], loop.recovered_at[i] = True, t
            loop.after_update[i] = updated != NAT and updated > int(loop.times[i, k - 1])
            loop.after_sibling[i] = bool(loop.planned_after_sibling[i])
            if loop.per_card:
                for s in loop.members[loop.card_of[i]]:
                    if s != i and loop.open(s, t + DELAY_NS):
                        loop.sibling_asked[s] = True
                        loop.push(s, t + DELAY_NS, _ASK)
            continue
        loop.codes[i, k] = declines["decline_code"].iloc[j]
        loop.network[i, k] = declines["network_decline_code"].iloc[j]
        loop.advice[i, k] = declines["merchant_advice_code"].iloc[j]
        loop.push(i, t + DELAY_NS, _ASK)


def _ask(loop: _Loop, rows: list[int], at: list[int], scorer: Scorer, settings: Settings) -> int:
    """Ask the served policy about the invoices (one per card) and queue their next retries."""
    from serving.policy.decision import decide_batch

    idx = np.array(rows)
    state = LoopState(
        invoice_ids=loop.held.invoice_ids[idx],
        context=loop.held.context.iloc[idx].reset_index(drop=True),
        retries_made=loop.retries[idx],
        max_retries=loop.config.max_retries,
        window_end=loop.window_end[idx],
        times=loop.times[idx],
        decline_codes=loop.codes[idx],
        network_codes=loop.network[idx],
        advice_codes=loop.advice[idx],
    )
    now = np.array(at, dtype=np.int64)
    requests = decision_requests(state, loop.held.world, now)
    known = [None if loop.update_known[i] == NAT else _index(np.array([loop.update_known[i]]))[0] for i in rows]
    cards = [loop.history(i, t) for i, t in zip(rows, at, strict=True)]
    clock = _index(now[:1])[0].to_pydatetime()
    decisions = decide_batch(
        requests,
        scorer,
        settings,
        clock,
        card_updated_at=[None if k is None else k.to_pydatetime() for k in known],
        cards=cards,
        customers=customer_columns(state.context),
    )
    for i, decision in zip(rows, decisions, strict=True):
        loop.planned[i] = NAT
        loop.planned_after_sibling[i], loop.sibling_asked[i] = loop.sibling_asked[i], False
        if decision.action == "retry" and decision.retry_at is not None:
            when = int(pd.Timestamp(decision.retry_at).as_unit("ns").value)
            if when <= loop.window_end[i] and loop.retries[i] < loop.config.max_retries:
                loop.planned[i] = when
                loop.push(i, when, _CHARGE)
    return len(rows)


def run_workflow(
    held: HeldOut, scorer: Scorer, settings: Settings, config: EvaluationConfig, per_card: bool, updates: bool
) -> WorkflowRun:
    """Replay the multi-invoice cards in time order, all cards in lockstep, one event per card per step."""
    started = time.perf_counter()
    loop = _Loop(held, config, per_card, updates)
    decisions, step = 0, 0
    while any(loop.queues.values()):
        step += 1
        charges: tuple[list[int], list[int]] = ([], [])
        asks: tuple[list[int], list[int]] = ([], [])
        for queue in loop.queues.values():
            if not queue:
                continue
            at, kind, i = heapq.heappop(queue)
            if kind == _CHARGE:
                if loop.planned[i] == at and loop.open(i, at):
                    charges[0].append(i)
                    charges[1].append(at)
            elif kind == _UPDATE:
                if loop.open(i, at):
                    loop.update_known[i] = at - DELAY_NS
                    asks[0].append(i)
                    asks[1].append(at)
            elif loop.open(i, at) and loop.retries[i] < config.max_retries:
                asks[0].append(i)
                asks[1].append(at)
                if per_card and not loop.asked[i]:
                    _replan_siblings(loop, i, at)
                loop.asked[i] = True
        if charges[0]:
            _charge(loop, charges[0], charges[1], step)
        if asks[0]:
            decisions += _ask(loop, asks[0], asks[1], scorer, settings)
    breaches, pairs = _card_checks(loop, settings)
    return WorkflowRun(
        recovered=loop.recovered,
        recovered_at=loop.recovered_at,
        retries=loop.retries,
        after_update=loop.after_update,
        after_sibling=loop.after_sibling,
        cap_breaches=breaches,
        same_hour_pairs=pairs,
        decisions=decisions,
        seconds=time.perf_counter() - started,
    )


def _card_checks(loop: _Loop, settings: Settings) -> tuple[int, int]:
    """Cap breaches (per card, all invoices) and retries of one card less than an hour apart."""
    breaches = pairs = 0
    brands = loop.held.context["card_brand"].astype(str).str.lower().to_numpy()
    for members in loop.members.values():
        attempts = [
            CardAttempt(
                _index(np.array([loop.times[i, r]]))[0],
                str(loop.held.invoice_ids[i]),
                r == 0,
                bool(loop.recovered[i]) and loop.times[i, r] == loop.recovered_at[i],
            )
            for i in members
            for r in range(int(loop.retries[i]) + 1)
        ]
        breaches += len(cap_breaches(brands[members[0]], attempts, settings))
        retries = np.sort([loop.times[i, r] for i in members for r in range(1, int(loop.retries[i]) + 1)])
        pairs += int((np.diff(retries) < NS_PER_HOUR).sum()) if len(retries) > 1 else 0
    return breaches, pairs


def summarise_workflow(held: HeldOut, runs: dict[str, WorkflowRun]) -> pd.DataFrame:
    """One row per variant: recovery on the multi-invoice cards and what the card checks found."""
    first = _utc_ns(held.first_attempts["attempted_at"])
    rows = []
    for name, run in runs.items():
        days = (run.recovered_at[run.recovered] - first[run.recovered]) / NS_PER_DAY
        rows.append(
            {
                "variant": name,
                "invoices": len(run.recovered),
                "cards": int(pd.Series(held.context["card_fingerprint"]).nunique()),
                "recovery_rate": float(run.recovered.mean()),
                "median_days_to_recovery": float(np.median(days)) if len(days) else float("nan"),
                "retries_per_invoice": float(run.retries.mean()),
                "recovered_after_card_update": int(run.after_update.sum()),
                "recovered_after_sibling_paid": int(run.after_sibling.sum()),
                "cap_breaches": run.cap_breaches,
                "retries_under_1h_apart_on_a_card": run.same_hour_pairs,
                "decisions": run.decisions,
                "seconds": round(run.seconds, 1),
            }
        )
    return pd.DataFrame(rows).set_index("variant")


def run_workflow_evaluation(
    bundle_dir: Path, config: EvaluationConfig, settings: Settings | None = None, variants: list[str] | None = None
) -> pd.DataFrame:
    """Every variant on the multi-invoice cards of one held-out world, with the served model."""
    from features.bundle import load_bundle
    from serving.policy.scoring import BundleScorer

    settings = settings or Settings()
    held = multi_invoice_cards(held_out_world(config))
    scorer = BundleScorer(load_bundle(bundle_dir))
    names = variants or list(VARIANTS)
    runs = {}
    for name in names:
        per_card, updates = VARIANTS[name]
        runs[name] = run_workflow(held, scorer, settings, config, per_card, updates)
    return summarise_workflow(held, runs)


def format_workflow(table: pd.DataFrame) -> str:
    """The variants side by side, one metric per line."""

    def shown(name: str, value: float) -> str:
        if name == "recovery_rate":
            return f"{value:.1%}"
        if name in ("median_days_to_recovery", "retries_per_invoice", "seconds"):
            return f"{value:.2f}"
        return f"{int(value):,}"

    lines = {name: [shown(name, float(v)) for v in table[name]] for name in table.columns}
    return pd.DataFrame(lines, index=table.index).T.to_string()
