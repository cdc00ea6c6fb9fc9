"""The card-network and decline rules, enforced before any model: one table, as data.

Each row names whose rule it is, what it matches (a decline category from
`features.taxonomy`, a Visa decline category, a Mastercard merchant advice code, or every
attempt), what it does, and where the rule comes from. `evaluate_rules` applies the table to an
invoice's attempts; the numbers that move over time are `Settings` fields named by the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import pandas as pd

from features.taxonomy import DeclineCategory, category_of, map_unique, normal_response_code, visa_category_of
from serving.policy.card import NO_HISTORY, CardAttempt, CardHistory
from serving.settings import Settings

# What the billing team should do besides (or instead of) the retry; documented in the README.
NextStep = Literal["request_new_payment_method", "notify_customer", "none"]
NEW_PAYMENT_METHOD: NextStep = "request_new_payment_method"
NOTIFY_CUSTOMER: NextStep = "notify_customer"
NO_STEP: NextStep = "none"

_DOMAIN = "shared/domain.md"
SOURCE_STRIPE = f"Stripe decline codes, docs.stripe.com/declines/codes ({_DOMAIN})"
SOURCE_VISA = f"Visa Core Rules, decline categories and reattempt limits ({_DOMAIN})"
SOURCE_MASTERCARD = f"Mastercard Merchant Advice Codes ({_DOMAIN})"
SOURCE_MASTERCARD_EXCESSIVE = f"Mastercard excessive-attempt program, US/Canada figures ({_DOMAIN})"


class Effect(StrEnum):
    """What a matching rule does to the decision."""

    STOP = "stop"  # never retry this card
    NEW_PAYMENT_METHOD = "new_payment_method"  # stop until the card data changes
    DELAY = "delay"  # no retry before the last attempt + `hours`
    SPACING = "spacing"  # replaces the default spacing after the last attempt (a setting)
    CAP = "cap"  # at most `setting` attempts in a trailing `period_days`


class Match(StrEnum):
    """Which attribute of an attempt a rule's codes are compared with."""

    DECLINE_CATEGORY = "decline_category"  # features.taxonomy.decline_category
    VISA_CATEGORY = "visa_category"  # features.taxonomy.visa_category, as text "1".."4"
    ADVICE_CODE = "merchant_advice_code"  # two-digit Mastercard merchant advice code
    EVERY_ATTEMPT = "every_attempt"  # no code: the rule counts attempts (caps)


class Scope(StrEnum):
    """Which attempts a rule looks at."""

    ANY = "any"  # a never-retry answer holds for the card whenever it was given
    LAST = "last"  # advice about the next retry comes from the latest decline


@dataclass(frozen=True)
class Rule:
    """One row of the rules table."""

    name: str
    network: str  # whose rule: "any", "visa", "mastercard"
    brands: tuple[str, ...]  # card brands it applies to; () = every brand
    match: Match
    codes: tuple[str, ...]
    scope: Scope
    effect: Effect
    reason: str  # billing words; "{code}" is replaced by the matching code
    source: str
    hours: float | None = None  # DELAY
    setting: str | None = None  # SPACING hours or CAP count: the Settings field holding it
    period_days: float | None = None  # CAP
    counts_first_attempt: bool = True  # CAP: Visa counts reattempts, Mastercard all declines
    next_step: NextStep | None = None  # STOP / NEW_PAYMENT_METHOD: what to do instead of retrying


def _advice_delay(code: str, hours: float, wait: str) -> Rule:
    """A Mastercard "retry after" advice code (24–30)."""
    return Rule(
        name=f"mastercard_advice_{code}",
        network="mastercard",
        brands=(),
        match=Match.ADVICE_CODE,
        codes=(code,),
        scope=Scope.LAST,
        effect=Effect.DELAY,
        reason=f"Mastercard advice {code}: no retry before {wait} after the last decline",
        source=SOURCE_MASTERCARD,
        hours=hours,
    )


# Merchant advice codes are only ever sent by Mastercard, so their rows apply whatever the
# request's brand says: ignoring a do-not-retry because of a mislabelled brand would be fined.
RULES: tuple[Rule, ...] = (
    Rule(
        name="hard_decline",
        network="any",
        brands=(),
        match=Match.DECLINE_CATEGORY,
        codes=(DeclineCategory.HARD.value,),
        scope=Scope.ANY,
        effect=Effect.STOP,
        reason="hard decline ({code}): it will never succeed on this card",
        source=SOURCE_STRIPE,
        next_step=NEW_PAYMENT_METHOD,
    ),
    Rule(
        name="visa_category_1",
        network="visa",
        brands=("visa",),
        match=Match.VISA_CATEGORY,
        codes=("1",),
        scope=Scope.ANY,
        effect=Effect.STOP,
        reason="Visa category 1 response: the issuer will never approve; every reattempt is fined",
        source=SOURCE_VISA,
        next_step=NEW_PAYMENT_METHOD,
    ),
    Rule(
        name="mastercard_do_not_retry",
        network="mastercard",
        brands=(),
        match=Match.ADVICE_CODE,
        codes=("03",),
        scope=Scope.ANY,
        effect=Effect.STOP,
        reason="Mastercard advice {code}: do not try again on this card",
        source=SOURCE_MASTERCARD,
        next_step=NEW_PAYMENT_METHOD,
    ),
    Rule(
        # The cardholder told the issuer to stop paying this merchant: ask them, not their bank.
        name="mastercard_payment_cancelled",
        network="mastercard",
        brands=(),
        match=Match.ADVICE_CODE,
        codes=("21",),
        scope=Scope.ANY,
        effect=Effect.STOP,
        reason="Mastercard advice {code}: the cardholder cancelled this recurring payment; do not try again",
        source=SOURCE_MASTERCARD,
        next_step=NOTIFY_CUSTOMER,
    ),
    Rule(
        name="needs_new_card",
        network="any",
        brands=(),
        match=Match.DECLINE_CATEGORY,
        codes=(DeclineCategory.NEEDS_NEW_CARD.value,),
        scope=Scope.LAST,
        effect=Effect.NEW_PAYMENT_METHOD,
        next_step=NEW_PAYMENT_METHOD,
        reason="{code}: the card data must change (account updater or the customer) before a retry can work",
        source=SOURCE_STRIPE,
    ),
    Rule(
        name="mastercard_new_account_information",
        network="mastercard",
        brands=(),
        match=Match.ADVICE_CODE,
        codes=("01",),
        scope=Scope.LAST,
        effect=Effect.NEW_PAYMENT_METHOD,
        next_step=NEW_PAYMENT_METHOD,
        reason="Mastercard advice 01: new account information; refresh the card, then retry",
        source=SOURCE_MASTERCARD,
    ),
    Rule(
        name="mastercard_another_payment_method",
        network="mastercard",
        brands=(),
        match=Match.ADVICE_CODE,
        codes=("40", "41", "43"),
        scope=Scope.LAST,
        effect=Effect.NEW_PAYMENT_METHOD,
        next_step=NEW_PAYMENT_METHOD,
        reason="Mastercard advice {code}: non-reloadable prepaid or single-use card; ask for another payment method",
        source=SOURCE_MASTERCARD,
    ),
    _advice_delay("24", 1, "1 h"),
    _advice_delay("25", 24, "24 h"),
    _advice_delay("26", 2 * 24, "2 days"),
    _advice_delay("27", 4 * 24, "4 days"),
    _advice_delay("28", 6 * 24, "6 days"),
    _advice_delay("29", 8 * 24, "8 days"),
    _advice_delay("30", 10 * 24, "10 days"),
    Rule(
        name="transient_error_spacing",
        network="any",
        brands=(),
        match=Match.DECLINE_CATEGORY,
        codes=(DeclineCategory.TRANSIENT.value,),
        scope=Scope.LAST,
        effect=Effect.SPACING,
        reason="transient error ({code}): a retry is allowed after {value:g} h instead of the usual spacing",
        source=SOURCE_STRIPE,
        setting="transient_retry_spacing_hours",
    ),
    Rule(
        name="visa_reattempt_cap",
        network="visa",
        brands=("visa",),
        match=Match.EVERY_ATTEMPT,
        codes=(),
        scope=Scope.ANY,
        effect=Effect.CAP,
        reason="Visa reattempt limit: at most {value:g} reattempts on a card in 30 days",
        source=SOURCE_VISA,
        setting="visa_max_reattempts_30d",
        period_days=30,
        counts_first_attempt=False,
    ),
    Rule(
        name="mastercard_declines_24h",
        network="mastercard",
        brands=("mastercard",),
        match=Match.EVERY_ATTEMPT,
        codes=(),
        scope=Scope.ANY,
        effect=Effect.CAP,
        reason="Mastercard excessive attempts: at most {value:g} declines on a card in 24 hours",
        source=SOURCE_MASTERCARD_EXCESSIVE,
        setting="mastercard_max_declines_24h",
        period_days=1,
    ),
    Rule(
        name="mastercard_declines_30d",
        network="mastercard",
        brands=("mastercard",),
        match=Match.EVERY_ATTEMPT,
        codes=(),
        scope=Scope.ANY,
        effect=Effect.CAP,
        reason="Mastercard excessive attempts: at most {value:g} declines on a card in 30 days",
        source=SOURCE_MASTERCARD_EXCESSIVE,
        setting="mastercard_max_declines_30d",
        period_days=30,
    ),
)


def longest_cap_period() -> pd.Timedelta:
    """The longest trailing period any attempt cap counts over: how far back a card's history matters."""
    return pd.Timedelta(days=max(r.period_days or 0 for r in RULES if r.effect is Effect.CAP))


@dataclass(frozen=True)
class Firing:
    """A rule that matched, with the code that made it match and the number it used."""

    rule: Rule
    code: str | None = None
    value: float | None = None
    detail: str | None = None  # e.g. how many invoices share the card a cap counted

    def reason(self) -> str:
        """The rule in billing words, with its source."""
        text = self.rule.reason.format(code=self.code or "", value=self.value or 0)
        if self.detail:
            text = f"{text} ({self.detail})"
        return f"{text} [{self.rule.source}]"


@dataclass(frozen=True)
class Verdict:
    """What the rules allow for the next retry of an invoice."""

    stops: tuple[Firing, ...]  # STOP and NEW_PAYMENT_METHOD firings; any one ends the decision
    next_step: NextStep | None
    not_before: pd.Timestamp  # the earliest retry the rules allow (spacing, delays, caps)
    spacing_hours: float  # spacing applied after the last attempt
    max_retries_by_caps: int | None  # the most retries the attempt caps leave, from not_before
    cap: Firing | None  # the cap that leaves the fewest retries
    firings: tuple[Firing, ...]  # DELAY, SPACING and binding CAP firings, for the reasons


def _codes(attempts: pd.DataFrame, match: Match) -> list[str | None]:
    """The attempts' values of the attribute a rule matches on, as text (missing → None).

    Plain lists: an invoice has a handful of attempts, and the table's ~15 lookups per decision
    cost microseconds on lists where each pandas `isin` cost about a millisecond.
    """
    if match is Match.DECLINE_CATEGORY:
        return map_unique(attempts["decline_code"], category_of)
    if match is Match.VISA_CATEGORY:
        return [str(c) if c else None for c in map_unique(attempts["network_decline_code"], visa_category_of)]
    if match is Match.ADVICE_CODE:
        return map_unique(attempts["merchant_advice_code"], normal_response_code)
    return [""] * len(attempts)


def _matching_code(rule: Rule, attempts: pd.DataFrame, codes: dict[Match, list[str | None]]) -> str | None:
    """The most recent matching code within the rule's scope (the decline code itself for categories)."""
    values = codes[rule.match]
    first = 0 if rule.scope is Scope.ANY else len(values) - 1
    position = next((i for i in range(len(values) - 1, first - 1, -1) if values[i] in rule.codes), None)
    if position is None:
        return None
    if rule.match is Match.DECLINE_CATEGORY:
        return str(attempts["decline_code"].iloc[position]).strip().lower()
    return str(values[position])


def _applies(rule: Rule, brand: str) -> bool:
    """Whether a row concerns this card brand."""
    return not rule.brands or brand.strip().lower() in rule.brands


def _cap_not_before(times: pd.Series, limit: int, period: pd.Timedelta) -> pd.Timestamp | None:
    """Earliest time a new attempt keeps at most `limit` counted attempts in any trailing period."""
    if len(times) < limit:
        return None
    # The new attempt plus the latest limit-1 counted ones may share a period: wait until the
    # limit-th latest one has left it.
    return pd.Timestamp(times.iloc[len(times) - limit]) + period


@dataclass(frozen=True)
class _CapResult:
    """What the attempt caps add to the code rules' earliest time."""

    not_before: pd.Timestamp
    delaying: tuple[Firing, ...]  # caps that pushed the earliest time later
    max_retries: int | None
    tightest: Firing | None


def _counted_times(rule: Rule, attempts: pd.DataFrame, card: CardHistory) -> pd.Series:
    """The attempt times a cap counts on the card: this invoice's and the card's other invoices', sorted."""
    own = attempts["attempted_at"] if rule.counts_first_attempt else attempts["attempted_at"].iloc[1:]
    others = card.cap_times(rule.counts_first_attempt)
    if not others:
        return own.reset_index(drop=True)
    return pd.Series(sorted([*own, *others]), dtype=own.dtype)


def _card_detail(card: CardHistory) -> str | None:
    """How many invoices a per-card count covered, when others share the card."""
    others = len(card.invoices())
    return f"counted across {others + 1} invoices on this card" if others else None


def _apply_caps(
    caps: list[Rule], attempts: pd.DataFrame, not_before: pd.Timestamp, settings: Settings, card: CardHistory
) -> _CapResult:
    """Delay the next retry until every cap has room on the card, and bound the plan by the room left."""
    delaying: list[Firing] = []
    max_retries: int | None = None
    tightest: Firing | None = None
    detail = _card_detail(card)
    for rule in caps:
        if rule.setting is None or rule.period_days is None:
            continue
        limit = int(getattr(settings, rule.setting))
        period = pd.Timedelta(days=rule.period_days)
        counted = _counted_times(rule, attempts, card)
        earliest = _cap_not_before(counted, limit, period)
        if earliest is not None and earliest > not_before:
            not_before = earliest
            delaying.append(Firing(rule, None, limit, detail))
        # Conservative: the planned retries are counted as if they all fell in one period.
        left = max(limit - int((counted > not_before - period).sum()), 0)
        if max_retries is None or left < max_retries:
            max_retries, tightest = left, Firing(rule, None, limit, detail)
    return _CapResult(not_before, tuple(delaying), max_retries, tightest)


def _code_firings(rules: list[Rule], attempts: pd.DataFrame) -> list[Firing]:
    """The code-matching rows (every effect but CAP) that match the attempts."""
    codes = {
        match: _codes(attempts, match) for match in (Match.DECLINE_CATEGORY, Match.VISA_CATEGORY, Match.ADVICE_CODE)
    }
    firings = []
    for rule in rules:
        code = _matching_code(rule, attempts, codes) if rule.effect is not Effect.CAP else None
        if code is not None:
            firings.append(Firing(rule, code))
    return firings


def evaluate_rules(attempts: pd.DataFrame, brand: str, settings: Settings, card: CardHistory = NO_HISTORY) -> Verdict:
    """Apply the table to an invoice's attempts (oldest first, `attempted_at` UTC).

    `card` holds the other invoices on the same card: the attempt caps count them too, and a
    success among them after this invoice's last failure allows a prompt retry.
    """
    applicable = [rule for rule in RULES if _applies(rule, brand)]
    matched = _code_firings(applicable, attempts)
    stops = tuple(f for f in matched if f.rule.effect in (Effect.STOP, Effect.NEW_PAYMENT_METHOD))
    # A never-retry rule outranks the new-card advice; its own next step says what to do instead.
    stops = tuple(sorted(stops, key=lambda f: f.rule.effect is not Effect.STOP))
    next_step = stops[0].rule.next_step if stops else None

    spacing_hours = settings.min_retry_spacing_hours
    firings: list[Firing] = []
    for f in matched:
        if f.rule.effect is Effect.SPACING and f.rule.setting is not None:
            spacing_hours = float(getattr(settings, f.rule.setting))
            firings.append(Firing(f.rule, f.code, spacing_hours))
        elif f.rule.effect is Effect.DELAY:
            firings.append(Firing(f.rule, f.code, f.rule.hours))
    last_at = pd.Timestamp(attempts["attempted_at"].iloc[-1])
    recovered = card.recovered_after(last_at)
    if recovered is not None and spacing_hours > settings.card_success_spacing_hours:
        # Another invoice on the card just went through: the funds are there now, so our own
        # spacing gives way (network delays and caps still hold).
        spacing_hours = settings.card_success_spacing_hours
        firings.append(Firing(CARD_RECOVERED, None, spacing_hours))
    # A delay comes on top of whichever spacing applies; the latest constraint wins.
    waits = [spacing_hours, *(f.rule.hours for f in firings if f.rule.effect is Effect.DELAY and f.rule.hours)]
    not_before = last_at + pd.Timedelta(hours=max(waits))
    if recovered is not None:
        not_before = max(not_before, recovered)

    caps = _apply_caps([r for r in applicable if r.effect is Effect.CAP], attempts, not_before, settings, card)
    return Verdict(
        stops=stops,
        next_step=next_step,
        not_before=caps.not_before,
        spacing_hours=spacing_hours,
        max_retries_by_caps=caps.max_retries,
        cap=caps.tightest,
        firings=(*firings, *caps.delaying),
    )


# Recovery practice rather than network rules: they relax the service's own spacing, never a
# network's delay, cap or stop.
CARD_RECOVERED = Rule(
    name="card_recovered",
    network="any",
    brands=(),
    match=Match.EVERY_ATTEMPT,
    codes=(),
    scope=Scope.LAST,
    effect=Effect.SPACING,
    reason="another invoice on this card was paid after this one failed: retry soon after ({value:g} h spacing)",
    source="Recovery practice: retry a customer's other invoices once one is paid (issue #9)",
    setting="card_success_spacing_hours",
)

CARD_UPDATED = Rule(
    name="card_updated",
    network="any",
    brands=(),
    match=Match.EVERY_ATTEMPT,
    codes=(),
    scope=Scope.LAST,
    effect=Effect.DELAY,
    reason="the card was updated after the last failure: retry promptly on the new card",
    source="Recovery practice: retry as soon as the card is updated (shared/domain.md)",
)


def fresh_card_verdict(updated_at: pd.Timestamp, now: pd.Timestamp, settings: Settings) -> Verdict:
    """What the rules allow once the card changed after the last failure: a prompt retry.

    The old card's declines (expired, hard, advice codes), its spacing and its attempt caps
    belonged to that card; the new card starts clean.
    """
    return Verdict(
        stops=(),
        next_step=None,
        not_before=max(updated_at, now),
        spacing_hours=settings.min_retry_spacing_hours,
        max_retries_by_caps=None,
        cap=None,
        firings=(Firing(CARD_UPDATED),),
    )


def cap_breaches(brand: str, attempts: Sequence[CardAttempt], settings: Settings) -> list[str]:
    """Every reattempt on one card (all its invoices) that took a count over a cap of the table.

    The checker of the caps, for tests and the closed-loop evaluation: a first charge is the
    merchant's schedule, so only reattempts can breach; each is checked with the attempts in the
    trailing period up to and including it (declines for Mastercard, reattempts for Visa).
    """
    breaches = []
    for rule in RULES:
        if rule.effect is not Effect.CAP or not _applies(rule, brand) or rule.setting is None:
            continue
        limit, period = int(getattr(settings, rule.setting)), pd.Timedelta(days=rule.period_days or 0)
        if rule.counts_first_attempt:
            counted = sorted(a.at for a in attempts if not a.succeeded)
        else:
            counted = sorted(a.at for a in attempts if not a.first)
        for attempt in attempts:
            if attempt.first:
                continue
            inside = sum(1 for at in counted if attempt.at - period < at <= attempt.at)
            if inside > limit:
                breaches.append(f"{rule.name}: {inside} > {limit} in the {period} up to {attempt.at}")
    return breaches
