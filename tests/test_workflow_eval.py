"""The workflow replay: invoices sharing a card, replayed in time order with the served policy."""

from __future__ import annotations

import pytest

from features.bundle import load_bundle
from serving.policy.scoring import BundleScorer
from serving.settings import Settings
from training.evaluate import EvaluationConfig, held_out_world
from training.simulate import simulate
from training.train import TrainConfig, train_model
from training.workflow_eval import format_workflow, multi_invoice_cards, run_workflow, summarise_workflow

CONFIG = EvaluationConfig(invoices=700, seed=11)


@pytest.fixture(scope="module")
def held():  # type: ignore[no-untyped-def]
    return multi_invoice_cards(held_out_world(CONFIG))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> BundleScorer:
    """A small model trained on simulated history: the replay's logic, not the model, is under test,
    and the shipped model's LightGBM predict and TreeSHAP made these two tests most of the suite's time."""
    out = tmp_path_factory.mktemp("bundle")
    train_model(simulate(6000, 1).attempts, out, TrainConfig(num_boost_round=60))
    return BundleScorer(load_bundle(out))


def test_only_cards_with_several_invoices_are_replayed(held) -> None:  # type: ignore[no-untyped-def]
    counts = held.context["card_fingerprint"].value_counts()
    assert len(held.invoice_ids) > 50 and (counts >= 2).all()


def test_per_card_planning_keeps_tight_caps_that_independent_decisions_break(held, scorer) -> None:  # type: ignore[no-untyped-def]
    # Caps far below the networks' so that they bind in a short replay.
    tight = Settings(visa_max_reattempts_30d=2, mastercard_max_declines_24h=2, mastercard_max_declines_30d=3)
    independent = run_workflow(held, scorer, tight, CONFIG, per_card=False, updates=True)
    per_card = run_workflow(held, scorer, tight, CONFIG, per_card=True, updates=True)
    assert independent.cap_breaches > 0 and independent.same_hour_pairs > 0
    assert per_card.cap_breaches == 0 and per_card.same_hour_pairs == 0
    table = summarise_workflow(held, {"independent": independent, "per_card": per_card})
    assert table.loc["per_card", "recovered_after_sibling_paid"] > 0
    assert table.loc["independent", "recovered_after_sibling_paid"] == 0
    assert "recovery_rate" in format_workflow(table)


def test_without_card_updates_nothing_is_recovered_after_one(held, scorer) -> None:  # type: ignore[no-untyped-def]
    run = run_workflow(held, scorer, Settings(), CONFIG, per_card=True, updates=False)
    assert run.after_update.sum() == 0
    assert (run.retries <= CONFIG.max_retries).all() and run.cap_breaches == 0
