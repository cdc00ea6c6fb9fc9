"""What the other invoices on the same card did and plan: the input of per-card caps and joint planning.

Card networks count attempts per card, not per invoice: a customer with three subscriptions on one
card spends one card's Visa reattempt and Mastercard decline allowance. The store (or the
evaluator's simulated store) supplies a `CardHistory` per decision; the rules count its attempts
and planned retries in the caps, and the decision keeps its retries out of the hours the other
invoices already hold and retries promptly after another invoice on the card succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class CardAttempt:
    """One attempt of another invoice on the same card."""

    at: pd.Timestamp
    invoice_id: str
    first: bool  # the invoice's first, scheduled charge (not a reattempt)
    succeeded: bool


@dataclass(frozen=True)
class CardHistory:
    """The card's attempts and planned retries by invoices other than the one being decided."""

    attempts: tuple[CardAttempt, ...] = ()
    planned: tuple[tuple[str, pd.Timestamp], ...] = ()  # (invoice_id, next planned retry) of open invoices

    def cap_times(self, counts_first_attempt: bool) -> list[pd.Timestamp]:
        """Times a card cap counts: declines (Mastercard, first charges included) or reattempts (Visa).

        Planned retries of the other open invoices count too, as if they were made: two invoices
        deciding at the same moment must not both take the card's last allowed attempt.
        """
        if counts_first_attempt:
            made = [a.at for a in self.attempts if not a.succeeded]
        else:
            made = [a.at for a in self.attempts if not a.first]
        return sorted([*made, *(at for _, at in self.planned)])

    def invoices(self) -> set[str]:
        """The other invoices this history covers."""
        return {a.invoice_id for a in self.attempts} | {invoice for invoice, _ in self.planned}

    def recovered_after(self, at: pd.Timestamp) -> pd.Timestamp | None:
        """The latest success of another invoice on the card after `at` (funds are there now), if any."""
        later = [a.at for a in self.attempts if a.succeeded and a.at > at]
        return max(later) if later else None

    def planned_times(self) -> list[pd.Timestamp]:
        """The other invoices' next planned retries."""
        return [at for _, at in self.planned]


NO_HISTORY = CardHistory()
