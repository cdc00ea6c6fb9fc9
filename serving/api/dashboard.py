"""`GET /dashboard`: the recovery KPIs and the worklist as one self-contained HTML page (``serving.dashboard``).

The page is guarded like ``/v1``: when ``RETRYOPT_API_KEY`` is set, the request needs the
``X-API-Key`` header. Browsers don't send custom headers on their own, so operators put the
dashboard behind their SSO / reverse proxy, which authenticates the person and adds the header.
There is deliberately no ``?key=`` parameter: a key in a URL ends up in browser history, proxy
logs and ``Referer`` headers.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse
from pydantic import TypeAdapter, ValidationError

from serving.dashboard import WORKLIST_ROWS, render_dashboard
from serving.deps import ClockDep, SessionDep, SettingsDep, require_api_key
from serving.policy import InvalidFieldError
from serving.schemas import ErrorResponse, UtcIn
from serving.store import compute_kpis, recoverable_invoices

router = APIRouter(tags=["dashboard"], dependencies=[Depends(require_api_key)])

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(UtcIn)
# The page loads nothing: no script, font, image or stylesheet from anywhere, so even a
# value that slipped past escaping could not run or phone home.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",  # revenue figures: not for shared caches
    "X-Content-Type-Options": "nosniff",
}


def parse_bound(name: str, text: str | None, *, inclusive_day: bool) -> datetime | None:
    """A ``from``/``to`` value: a timestamp with a zone, or a date (UTC; ``to`` includes that day)."""
    if text is None or not text.strip():
        return None  # the page's form sends empty fields
    value = text.strip()
    if _DATE.fullmatch(value):
        try:
            day = datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time(), tzinfo=UTC)
        except ValueError:
            raise InvalidFieldError(name, f"{name} is not a valid date: {value!r}") from None
        # A person asking for "to 2026-03-31" means through that day; the cohort end is exclusive.
        return day + timedelta(days=1) if inclusive_day else day
    try:
        return _TIMESTAMP.validate_python(value)
    except ValidationError:
        raise InvalidFieldError(
            name, f"{name} must be a date (YYYY-MM-DD) or a timestamp with a zone (2026-11-01T00:00:00Z)"
        ) from None


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "The dashboard page."},
        # Errors are JSON, not the page's text/html: spelled out, since `model` would file them under text/html.
        401: {
            "content": {"application/json": {"schema": ErrorResponse.model_json_schema()}},
            "description": "Missing or wrong X-API-Key (when the service has a key).",
        },
        422: {
            "content": {"application/json": {"schema": ErrorResponse.model_json_schema()}},
            "description": "Invalid query parameter.",
        },
    },
)
def dashboard(
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    start: Annotated[
        str | None, Query(alias="from", description="First failures on or after: YYYY-MM-DD or a UTC timestamp.")
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to", description="First failures up to: YYYY-MM-DD (that day included) or a timestamp (excluded)."
        ),
    ] = None,
    now: Annotated[
        str | None,
        Query(description="The worklist as of this time: YYYY-MM-DD or a UTC timestamp; default: the server clock."),
    ] = None,
) -> HTMLResponse:
    """Recovery KPIs for people (tiles and charts over ``GET /v1/kpis``) and the top of the worklist.

    The worklist (``GET /v1/recoverable``'s first rows) is as of ``now``, whatever the period. Needs X-API-Key
    when one is set.
    """
    since = parse_bound("from", start, inclusive_day=False)
    until = parse_bound("to", end, inclusive_day=True)
    if since is not None and until is not None and until <= since:
        raise InvalidFieldError("to", "to must be after from")
    as_of = parse_bound("now", now, inclusive_day=False) or clock

    def kpis(group_by: str) -> dict[str, object]:
        """One grouped KPI query over the page's period (each carries the cohort totals too)."""
        return compute_kpis(session, start=since, end=until, group_by=group_by, ltv_periods=settings.ltv_periods)

    by_week = kpis("week")
    worklist = recoverable_invoices(session, as_of, limit=WORKLIST_ROWS)
    page = render_dashboard(
        by_week,  # the totals of a grouped result are the cohort's: no fifth query
        by_week,
        kpis("decline_code"),
        kpis("attempt_number"),
        kpis("policy"),
        start=since,
        end=until,
        form_values=(start or "", end or ""),
        control_share=settings.control_share,
        generated_at=clock,
        worklist=[asdict(item) for item in worklist.items],
        worklist_total=worklist.total,
        worklist_as_of=as_of,
    )
    return HTMLResponse(page, headers=_HEADERS)
