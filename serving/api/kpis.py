"""`GET /v1/kpis`: recovery KPIs over the stored outcomes, computed in SQL."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from serving.deps import SessionDep, SettingsDep
from serving.policy import InvalidFieldError
from serving.schemas import ErrorResponse, UtcIn
from serving.store import GROUP_BY_CHOICES, compute_kpis

router = APIRouter(prefix="/v1", tags=["kpis"])


@router.get(
    "/kpis",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key (when the service has a key)."},
        422: {"model": ErrorResponse, "description": "Invalid query parameter."},
        503: {"model": ErrorResponse, "description": "The store is unreachable."},
    },
)
def kpis(
    session: SessionDep,
    settings: SettingsDep,
    start: Annotated[UtcIn | None, Query(alias="from", description="First failures at or after (UTC).")] = None,
    end: Annotated[UtcIn | None, Query(alias="to", description="First failures before (UTC).")] = None,
    group_by: Annotated[str | None, Query(description=f"One of: {', '.join(GROUP_BY_CHOICES)}.")] = None,
) -> dict[str, Any]:
    """Recovery rate, recovered amount, time to recovery, churn and LTV of failed invoices (README: definitions)."""
    if group_by is not None and group_by not in GROUP_BY_CHOICES:
        raise InvalidFieldError("group_by", f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}")
    if start is not None and end is not None and end <= start:
        raise InvalidFieldError("to", "to must be after from")
    return compute_kpis(session, start=start, end=end, group_by=group_by, ltv_periods=settings.ltv_periods)
