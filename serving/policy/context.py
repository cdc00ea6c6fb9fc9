"""The facts a decision rests on, resolved from a request and the clock, with their cross-field checks.

A request can be well-typed and still inconsistent (attempts out of order, an attempt after
`now`, a window that already ended); those are the caller's errors and name the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from serving.schemas import DecisionRequest
from serving.settings import Settings


class InvalidFieldError(ValueError):
    """A request field that contradicts another; the API answers 422 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DecisionContext:
    """Times and budget of one decision, with every default applied."""

    now: pd.Timestamp
    first_failure: pd.Timestamp
    last_attempt: pd.Timestamp
    window_end: pd.Timestamp  # effective: given or default, cut at the longest window allowed
    window_cut: bool  # the request's window_end was beyond max_window_days
    max_retries: int
    retries_made: int

    @property
    def retries_left(self) -> int:
        """Retries the budget still allows (attempts already made count)."""
        return max(self.max_retries - self.retries_made, 0)


def _utc(at: datetime) -> pd.Timestamp:
    """A tz-aware instant as a UTC pandas timestamp."""
    stamp = pd.Timestamp(at)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def check_attempts(request: DecisionRequest, now: pd.Timestamp) -> None:
    """Attempts oldest first and none after `now`, else InvalidFieldError naming the attempt."""
    previous: pd.Timestamp | None = None
    for i, attempt in enumerate(request.attempts):
        at = _utc(attempt.attempted_at)
        field = f"attempts.{i}.attempted_at"
        if previous is not None and at < previous:
            raise InvalidFieldError(
                field, f"attempts must be oldest first: {field} is before attempts.{i - 1}.attempted_at"
            )
        if at > now:
            raise InvalidFieldError(
                field,
                f"{field} is after now ({now.strftime('%Y-%m-%dT%H:%M:%SZ')}): attempts must already have happened",
            )
        previous = at


def resolve_context(request: DecisionRequest, settings: Settings, clock: datetime) -> DecisionContext:
    """Apply the defaults (now, window, budget) and check the request is consistent."""
    now = _utc(request.now) if request.now is not None else _utc(clock)
    check_attempts(request, now)
    if request.window_end is not None and _utc(request.window_end) <= now:
        raise InvalidFieldError("window_end", "window_end must be after now")
    first = _utc(request.attempts[0].attempted_at)
    longest = first + pd.Timedelta(days=settings.max_window_days)
    wanted = (
        _utc(request.window_end)
        if request.window_end is not None
        else first + pd.Timedelta(days=settings.default_window_days)
    )
    max_retries = request.max_retries if request.max_retries is not None else settings.default_max_retries
    return DecisionContext(
        now=now,
        first_failure=first,
        last_attempt=_utc(request.attempts[-1].attempted_at),
        window_end=min(wanted, longest),
        window_cut=request.window_end is not None and wanted > longest,
        max_retries=max_retries,
        retries_made=len(request.attempts) - 1,
    )
