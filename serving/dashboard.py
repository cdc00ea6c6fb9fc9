"""The KPI dashboard as one self-contained HTML page: headline tiles and inline SVG charts.

Everything is rendered on the server by small pure functions from the dicts
:func:`serving.store.compute_kpis` returns, so the page needs no script, font or CDN (the
service often runs where browsers can't reach the internet, and a page with no script is one a
Content-Security-Policy can lock down completely). Every text that reaches the page goes
through :func:`html.escape`: decline codes and policy names come from callers.

Each chart is a ``<figure>`` with an ``id`` and a ``data-chart`` attribute; its bars are
``rect.bar``, its points ``circle.point``, and both carry the raw number in ``data-value`` so
tests (and anyone scraping the page) can read the figures without parsing formatted text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from html import escape
from typing import Any

from features.money import CURRENCY_EXPONENTS, USD_PER_UNIT

BAR_COLOR = "#2b6cb0"  # the one chart colour; the screenshot test looks for it
# The learned arm in the chart colour, the arms it is compared with in greys.
ARM_COLORS = {"learned": BAR_COLOR, "control": "#718096"}
OTHER_ARM_COLOR = "#a0aec0"
VOLUME_COLOR = "#e2e8f0"
GRID_COLOR = "#e2e8f0"
TEXT_COLOR = "#1a202c"
MUTED_COLOR = "#4a5568"
MISSING = "—"
MAX_DECLINE_CODES = 10  # the long tail of codes is summed into one bar
MAX_CURRENCIES = 4  # tiles list the largest currencies, then "and N more"
# Policy arms in reading order; "none" is the group of invoices with no stored decision.
ARM_ORDER = ("learned", "control", "fallback", "none")
ARM_LABELS = {"none": "no decision"}

Formatter = Callable[[float], str]


# ---------------------------------------------------------------------------------------
# Number formats


def fmt_count(value: float) -> str:
    """A count with thousands separators."""
    return f"{value:,.0f}"


def fmt_percent(value: float | None) -> str:
    """A ratio as a percentage with one decimal, or a dash when undefined."""
    return MISSING if value is None else f"{value * 100:.1f}%"


def fmt_hours(value: float | None) -> str:
    """Hours, with one decimal below ten."""
    if value is None:
        return MISSING
    return f"{value:,.1f} h" if value < 10 else f"{value:,.0f} h"


def fmt_duration(hours: float | None) -> str:
    """Hours, or days once they are the easier unit to read (from two days on)."""
    if hours is None or hours < 48:
        return fmt_hours(hours)
    return f"{hours / 24:.1f} days"


def fmt_amount(amount_minor: int, currency: str) -> str:
    """Minor units as major units with the currency's decimals: ``1,234.50`` (USD), ``1,200`` (JPY)."""
    exponent = CURRENCY_EXPONENTS.get(currency.lower(), 2)
    return f"{amount_minor / 10**exponent:,.{exponent}f}"


def fmt_money(amount_minor: int, currency: str) -> str:
    """An amount with its ISO code, e.g. ``USD 1,234.50``."""
    return f"{currency.upper()} {fmt_amount(amount_minor, currency)}"


def fmt_points(value: float) -> str:
    """A difference of two rates in percentage points, signed (with a true minus sign)."""
    return f"{value * 100:+.1f}".replace("-", "−")


# ---------------------------------------------------------------------------------------
# SVG charts


def _attrs(**attributes: Any) -> str:
    """HTML attributes, escaped; ``class_`` and ``data_x`` become ``class`` and ``data-x``."""
    parts = []
    for name, value in attributes.items():
        if value is None:
            continue
        key = name.rstrip("_").replace("_", "-")
        parts.append(f'{key}="{escape(str(value))}"')
    return " ".join(parts)


def _truncate(text: str, limit: int) -> str:
    """Text cut to ``limit`` characters with an ellipsis (the full text stays in a tooltip)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(chart_id: str, kind: str, title: str, body: str, caption: str = "") -> str:
    """A chart's frame: its title, the drawing (or a message) and an optional caption."""
    note = f'<p class="caption">{escape(caption)}</p>' if caption else ""
    return (
        f"<figure {_attrs(class_='chart', id=chart_id, data_chart=kind)}>"
        f"<figcaption>{escape(title)}</figcaption>{body}{note}</figure>"
    )


def empty_chart(chart_id: str, kind: str, title: str, message: str) -> str:
    """A chart frame that explains why there is nothing to draw."""
    return _figure(chart_id, kind, title, f'<p class="chart-empty">{escape(message)}</p>')


def bar_chart(
    chart_id: str,
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    fmt: Formatter,
    *,
    notes: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    max_value: float | None = None,
    caption: str = "",
) -> str:
    """Horizontal bars (labels can be long decline codes), each labelled with ``fmt(value)`` and its note."""
    if not labels:
        return empty_chart(chart_id, "bar", title, "Nothing to show yet.")
    width, label_w, value_w, row_h, bar_h, top = 560, 176, 150, 30, 18, 6
    track_w = width - label_w - value_w
    scale_max = max_value if max_value is not None else max(max(values), 1e-12)
    height = top * 2 + row_h * len(labels)
    rows = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row_h
        bar_y = y + (row_h - bar_h) / 2
        bar_w = max(track_w * min(value / scale_max, 1.0), 0.0) if scale_max > 0 else 0.0
        note = notes[i] if notes else ""
        text = f"{fmt(value)} · {note}" if note else fmt(value)
        color = colors[i] if colors else BAR_COLOR
        rows.append(
            f"<g><title>{escape(label)}: {escape(text)}</title>"
            f"<text {_attrs(x=label_w - 8, y=y + row_h / 2, class_='label')}>{escape(_truncate(label, 24))}</text>"
            f"<rect {_attrs(x=label_w, y=bar_y, width=track_w, height=bar_h, class_='track')}/>"
            f"<rect {_attrs(x=label_w, y=bar_y, width=round(bar_w, 2), height=bar_h, fill=color, class_='bar', data_label=label, data_value=value)}/>"
            f"<text {_attrs(x=label_w + track_w + 8, y=y + row_h / 2, class_='value')}>{escape(text)}</text></g>"
        )
    svg = (
        f"<svg {_attrs(viewBox=f'0 0 {width} {height}', width='100%', role='img', aria_label=title)}>"
        + "".join(rows)
        + "</svg>"
    )
    return _figure(chart_id, "bar", title, svg, caption)


def _tick_indices(count: int, most: int) -> list[int]:
    """At most ``most`` evenly spread indices of ``count`` items, always the first and last."""
    if count <= most:
        return list(range(count))
    step = (count - 1) / (most - 1)
    return sorted({round(i * step) for i in range(most)})


def _runs(positions: Sequence[float], values: Sequence[float | None]) -> list[list[int]]:
    """Indices split where a value is missing or a step skips a position, so the line breaks there."""
    runs: list[list[int]] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if runs and positions[i] - positions[runs[-1][-1]] <= 1:  # a skipped point widens the step
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def line_chart(
    chart_id: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    title: str,
    fmt: Formatter,
    *,
    positions: Sequence[float] | None = None,
    volumes: Sequence[float] | None = None,
    notes: Sequence[str] | None = None,
    max_value: float = 1.0,
    caption: str = "",
) -> str:
    """A line of ``values`` over ``positions`` (default: 0, 1, 2…) on a 0..``max_value`` axis.

    ``volumes`` draws light columns behind the line (how many invoices each point stands for),
    so a dip made of three invoices isn't read like one made of three hundred. The line breaks
    where positions skip a step (a week without failed invoices has no rate).
    """
    if not labels:
        return empty_chart(chart_id, "line", title, "Nothing to show yet.")
    xs = list(positions) if positions is not None else [float(i) for i in range(len(labels))]
    width, height, left, right, top, bottom = 1120, 260, 52, 40, 12, 34  # room for the last date label
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(xs[-1] - xs[0], 1.0)
    step_w = plot_w / (span + 1)

    def x_at(i: int) -> float:
        return round(left + step_w * (xs[i] - xs[0] + 0.5), 2)

    def y_at(value: float) -> float:
        return round(top + plot_h * (1 - min(max(value / max_value, 0.0), 1.0)), 2)

    parts = []
    for k in range(5):  # gridlines at 0, 25, 50, 75 and 100% of the axis
        fraction = k / 4
        y = y_at(max_value * fraction)
        parts.append(f"<line {_attrs(x1=left, x2=width - right, y1=y, y2=y, class_='grid')}/>")
        parts.append(f"<text {_attrs(x=left - 6, y=y, class_='axis y')}>{escape(fmt(max_value * fraction))}</text>")
    if volumes:
        most = max(max(volumes), 1)
        column_w = max(step_w * 0.7, 1.0)
        for i, volume in enumerate(volumes):
            column_h = plot_h * 0.45 * volume / most  # the lower half: it must not hide the line
            parts.append(
                f"<rect {_attrs(x=round(x_at(i) - column_w / 2, 2), y=round(top + plot_h - column_h, 2), width=round(column_w, 2), height=round(column_h, 2), class_='volume', data_value=volume)}/>"
            )
    for run in _runs(xs, values):
        points = " ".join(f"{x_at(i)},{y_at(values[i] or 0.0)}" for i in run)
        parts.append(f"<polyline {_attrs(points=points, class_='line')}/>")
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            continue
        note = f" · {notes[i]}" if notes else ""
        parts.append(
            f"<circle {_attrs(cx=x_at(i), cy=y_at(value), r=3.5, fill=BAR_COLOR, class_='point', data_label=label, data_value=value)}>"
            f"<title>{escape(label)}: {escape(fmt(value))}{escape(note)}</title></circle>"
        )
    for i in _tick_indices(len(labels), 10):
        parts.append(f"<text {_attrs(x=x_at(i), y=height - 10, class_='axis x')}>{escape(labels[i])}</text>")
    svg = (
        f"<svg {_attrs(viewBox=f'0 0 {width} {height}', width='100%', role='img', aria_label=title)}>"
        + "".join(parts)
        + "</svg>"
    )
    return _figure(chart_id, "line", title, svg, caption)


# ---------------------------------------------------------------------------------------
# The charts of the page, from compute_kpis results


def _groups(kpis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``groups`` of a grouped ``compute_kpis`` result (none when ungrouped)."""
    return list(kpis.get("groups") or [])


def _week_offset(week: str, first: str) -> float:
    """Weeks between two ``YYYY-MM-DD`` Mondays (non-dates fall back to no gap)."""
    try:
        return (date.fromisoformat(week) - date.fromisoformat(first)).days / 7
    except ValueError:
        return 0.0


def recovery_by_week_chart(by_week: Mapping[str, Any]) -> str:
    """Recovery rate of each week's failed invoices (by first failure), with the volume behind."""
    groups = _groups(by_week)
    labels = [str(g["group"]) for g in groups]
    offsets: list[float] = []
    for label in labels:  # positions by date, forced increasing in case a label isn't one
        offset = _week_offset(label, labels[0])
        offsets.append(offset if not offsets or offset > offsets[-1] else offsets[-1] + 1)
    return line_chart(
        "recovery-by-week",
        labels,
        [g["recovery_rate"] for g in groups],
        "Recovery rate by week of first failure",
        fmt_percent,
        positions=offsets,
        volumes=[g["failed_invoices"] for g in groups],
        notes=[f"{g['recovered_invoices']:,} of {g['failed_invoices']:,} invoices" for g in groups],
        caption="Line: share of the week's failed invoices recovered so far. Grey columns: failed invoices that "
        "week. Recent weeks are still being retried, so their rate can still rise.",
    )


def _merge_tail(groups: list[dict[str, Any]], keep: int) -> list[tuple[str, int, int]]:
    """(label, failed, recovered) of the ``keep`` largest groups, the rest summed into one row."""
    ordered = sorted(groups, key=lambda g: (-g["failed_invoices"], str(g["group"])))
    rows = [(str(g["group"]), g["failed_invoices"], g["recovered_invoices"]) for g in ordered[:keep]]
    tail = ordered[keep:]
    if tail:
        failed = sum(g["failed_invoices"] for g in tail)
        recovered = sum(g["recovered_invoices"] for g in tail)
        rows.append((f"{len(tail)} other codes", failed, recovered))
    return rows


def decline_code_chart(by_decline: Mapping[str, Any]) -> str:
    """Recovery rate per first decline code, most frequent codes first."""
    rows = _merge_tail(_groups(by_decline), MAX_DECLINE_CODES)
    return bar_chart(
        "recovery-by-decline-code",
        [label for label, _, _ in rows],
        [recovered / failed if failed else 0.0 for _, failed, recovered in rows],
        "Recovery rate by first decline code",
        fmt_percent,
        notes=[f"{failed:,} invoices" for _, failed, _ in rows],
        max_value=1.0,
        caption="Decline code of the invoice's first failed charge; most frequent first.",
    )


def attempt_number_chart(by_attempt: Mapping[str, Any]) -> str:
    """Share of recoveries made at each attempt number (attempt 1 is the failed charge)."""
    groups = [g for g in _groups(by_attempt) if str(g["group"]).isdigit()]
    recovered = sum(g["recovered_invoices"] for g in groups)
    title = "Recoveries by attempt number"
    if recovered == 0:
        return empty_chart("recoveries-by-attempt", "bar", title, "No invoice has been recovered yet.")
    return bar_chart(
        "recoveries-by-attempt",
        [f"attempt {g['group']} (retry {int(g['group']) - 1})" for g in groups],
        [g["recovered_invoices"] / recovered for g in groups],
        title,
        fmt_percent,
        notes=[f"{g['recovered_invoices']:,} invoices" for g in groups],
        max_value=1.0,
        caption="Share of all recovered invoices that were recovered at each attempt.",
    )


def _difference_interval(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """Rate of ``a`` minus rate of ``b``, with a normal-approximation 95% interval."""
    n_a, n_b = a["failed_invoices"], b["failed_invoices"]
    if not n_a or not n_b:
        return None
    p_a, p_b = a["recovered_invoices"] / n_a, b["recovered_invoices"] / n_b
    margin = 1.96 * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return p_a - p_b, p_a - p_b - margin, p_a - p_b + margin


def uplift_text(diff: tuple[float, float, float] | None) -> str:
    """Learned minus control in words, saying whether the data can tell them apart yet."""
    if diff is None:
        return "Learned minus control: n/a."
    estimate, low, high = diff
    figures = f"{fmt_points(estimate)} points (95% interval {fmt_points(low)} to {fmt_points(high)})"
    if low > 0:
        verdict = "the learned policy recovers more."
    elif high < 0:
        verdict = "the learned policy recovers less."
    else:
        verdict = "not a clear difference yet (more invoices will narrow the interval)."
    return f"Learned minus control: {figures}: {verdict}"


def policy_chart(by_policy: Mapping[str, Any], control_share: float | None = None) -> str:
    """Recovery rate per policy arm (of the invoice's first decision), learned against control."""
    by_arm = {str(g["group"]): g for g in _groups(by_policy)}
    arms = [arm for arm in ARM_ORDER if arm in by_arm] + sorted(set(by_arm) - set(ARM_ORDER))
    title = "Control vs learned: recovery rate by policy arm"
    if not arms:
        return empty_chart("recovery-by-policy", "bar", title, "No failed invoices yet.")
    if "control" not in by_arm:
        if control_share:
            caption = "No control-group invoices in this period yet."
        else:
            caption = (
                "No control group configured: set RETRYOPT_CONTROL_SHARE (e.g. 0.1) to keep a share of invoices "
                "on the fixed schedule and measure the learned policy's uplift."
            )
    elif "learned" in by_arm:
        caption = uplift_text(_difference_interval(by_arm["learned"], by_arm["control"]))
    else:
        caption = "No learned-policy invoices in this period yet."
    caption += ' Arm of the invoice\'s first decision; "no decision": invoices retryopt was never asked about.'
    return bar_chart(
        "recovery-by-policy",
        [ARM_LABELS.get(arm, arm) for arm in arms],
        [by_arm[arm]["recovery_rate"] or 0.0 for arm in arms],
        title,
        fmt_percent,
        notes=[f"{by_arm[arm]['failed_invoices']:,} invoices" for arm in arms],
        colors=[ARM_COLORS.get(arm, OTHER_ARM_COLOR) for arm in arms],
        max_value=1.0,
        caption=caption,
    )


# ---------------------------------------------------------------------------------------
# Tiles and page


def _tile(tile_id: str, title: str, value_html: str, sub: str, raw: Any = None, css_class: str = "tile") -> str:
    """One headline figure: title, value, and a line saying what it counts."""
    return (
        f"<div {_attrs(class_=css_class, id=tile_id, data_value=raw)}>"
        f'<div class="tile-title">{escape(title)}</div><div class="tile-value">{value_html}</div>'
        f'<div class="tile-sub">{escape(sub)}</div></div>'
    )


def _rough_usd(amount_minor: int, currency: str) -> float:
    """An approximate USD value, only to order currencies by size (yen and cents aren't comparable)."""
    exponent = CURRENCY_EXPONENTS.get(currency.lower(), 2)
    return amount_minor / 10**exponent * USD_PER_UNIT.get(currency.lower(), 0.0)


def _per_currency(tile_id: str, amounts: Mapping[str, int], cells: Callable[[str], Sequence[str]]) -> str:
    """A row per currency (largest first), the rest summarised: amounts don't add across currencies."""
    if not amounts:
        return escape(MISSING)
    ordered = sorted(amounts, key=lambda c: (-_rough_usd(amounts[c], c), c))
    rows = [
        f"<tr {_attrs(id=f'{tile_id}-{c}', data_currency=c, data_value=amounts[c])}><th>{escape(c.upper())}</th>"
        + "".join(f"<td>{escape(cell)}</td>" for cell in cells(c))
        + "</tr>"
        for c in ordered[:MAX_CURRENCIES]
    ]
    if len(ordered) > MAX_CURRENCIES:
        more = len(ordered) - MAX_CURRENCIES
        rows.append(f'<tr class="more"><td colspan="4">and {more} more currencies</td></tr>')
    return f'<table class="currencies">{"".join(rows)}</table>'


def headline_tiles(kpis: Mapping[str, Any]) -> str:
    """The six figures a billing person reads first."""
    failed_amount: Mapping[str, int] = kpis.get("failed_amount") or {}
    recovered_amount: Mapping[str, int] = kpis.get("recovered_amount") or {}
    rate_by_currency: Mapping[str, float | None] = kpis.get("amount_recovery_rate_by_currency") or {}
    ltv: Mapping[str, int] = kpis.get("recovered_ltv") or {}

    def recovered_cells(c: str) -> list[str]:
        return [
            fmt_amount(recovered_amount.get(c, 0), c),
            f"of {fmt_amount(failed_amount[c], c)}",
            fmt_percent(rate_by_currency.get(c)),
        ]

    periods = kpis.get("ltv_periods")
    periods_text = f"{periods:g}" if isinstance(periods, int | float) else "?"
    attempts = kpis.get("attempts_per_recovery")
    median = kpis["median_hours_to_recovery"]
    tiles = [
        _tile(
            "tile-failed-invoices",
            "Failed invoices",
            escape(fmt_count(kpis["failed_invoices"])),
            f"{kpis['recovered_invoices']:,} recovered",
            kpis["failed_invoices"],
        ),
        _tile(
            "tile-recovery-rate",
            "Recovery rate",
            escape(fmt_percent(kpis["recovery_rate"])),
            "of failed invoices paid by a retry",
            kpis["recovery_rate"],
        ),
        _tile(
            "tile-amount-recovered",
            "Amount recovered",
            _per_currency(
                "tile-amount-recovered", {c: recovered_amount.get(c, 0) for c in failed_amount}, recovered_cells
            ),
            "recovered of failed, and the share, per currency",
            css_class="tile money",
        ),
        _tile(
            "tile-median-hours",
            "Median time to recovery",
            escape(fmt_duration(median)),
            f"from first failure ({fmt_hours(median)})"
            + (f"; {attempts:.1f} retries per recovery" if isinstance(attempts, int | float) else ""),
            kpis["median_hours_to_recovery"],
        ),
        _tile(
            "tile-involuntary-churn",
            "Involuntary churn",
            escape(fmt_percent(kpis["involuntary_churn_rate"])),
            "of failed invoices never recovered",
            kpis["involuntary_churn_rate"],
        ),
        _tile(
            "tile-recovered-ltv",
            "Recovered LTV",
            _per_currency("tile-recovered-ltv", ltv, lambda c: [fmt_amount(ltv[c], c)]),
            f"recovered amount × {periods_text} billing periods",
            css_class="tile money",
        ),
    ]
    return f'<section class="tiles">{"".join(tiles)}</section>'


# ---------------------------------------------------------------------------------------
# The worklist

WORKLIST_ROWS = 20  # the page shows the top of GET /v1/recoverable


def _when(at: datetime | None, as_of: datetime | None) -> str:
    """A planned time to the minute, UTC, marked when it has passed; a dash when none is planned (a stop)."""
    if at is None:
        return MISSING
    text = at.strftime("%Y-%m-%d %H:%M")
    return f"{text} (passed)" if as_of is not None and at < as_of else text


def _worklist_row(item: Mapping[str, Any], as_of: datetime | None = None) -> str:
    """One open invoice: who, how much, how likely, what next (a retry planned before ``as_of`` has passed)."""
    currency = str(item["currency"])
    step = item.get("next_step")
    step = None if step in (None, "none") else str(step)
    cells = [
        (escape(str(item["invoice_id"])), "text"),
        (escape(str(item["customer_id"])), "text"),
        (escape(fmt_money(int(item["amount"]), currency)), "number"),
        (escape(fmt_percent(item["recovery_probability"])), "number"),
        (escape(fmt_money(int(item["expected_recoverable_amount"]), currency)), "number"),
        (escape(_when(item.get("next_retry_at"), as_of)), "number"),
        (escape(step.replace("_", " ")) if step else escape(MISSING), "text"),
    ]
    attrs = _attrs(
        class_="open-invoice",
        data_invoice=item["invoice_id"],
        data_value=item["expected_recoverable_amount"],
        data_probability=item["recovery_probability"],
        data_next_step=step,
    )
    return f"<tr {attrs}>" + "".join(f'<td class="{kind}">{cell}</td>' for cell, kind in cells) + "</tr>"


def worklist_table(items: Sequence[Mapping[str, Any]], total: int, as_of: datetime | None = None) -> str:
    """The open failed invoices with the most to recover (``GET /v1/recoverable``'s first rows), or why there are none."""
    title = "Worklist: open failed invoices by expected recoverable amount"
    if as_of is not None:
        title += f" (as of {as_of.strftime('%Y-%m-%d %H:%M UTC')}, whatever the period)"
    if not items:
        body = (
            '<p class="chart-empty">No open failed invoice: every invoice retryopt decided on is paid or past its '
            "retry window.</p>"
        )
        return f'<section class="worklist" id="worklist"><h2>{escape(title)}</h2>{body}</section>'
    heads = ["Invoice", "Customer", "Amount", "Recovery probability", "Expected recoverable", "Next retry (UTC)"]
    header = "".join(f"<th>{escape(text)}</th>" for text in [*heads, "Next step"])
    rows = "".join(_worklist_row(item, as_of) for item in items)
    shown = f"the top {len(items):,} of {total:,}" if total > len(items) else f"all {total:,}"
    caption = (
        f"Showing {shown}. Expected recoverable = amount × the plan's probability of recovering the invoice before "
        "its window ends; invoices in different currencies are ranked by their amounts in minor units."
    )
    return (
        f'<section class="worklist" id="worklist"><h2>{escape(title)}</h2>'
        f'<table class="worklist"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>'
        f'<p class="caption">{escape(caption)}</p></section>'
    )


def _iso(at: datetime) -> str:
    """A timestamp as the contract writes it, or a plain date at midnight UTC."""
    text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text[:10] if text.endswith("T00:00:00Z") else text


def period_text(start: datetime | None, end: datetime | None) -> str:
    """The cohort the page describes, in words."""
    parts = ["Failed invoices first declined"]
    if start is not None:
        parts.append(f"from {_iso(start)}")
    if end is not None:
        parts.append(f"before {_iso(end)}")
    return " ".join(parts) if len(parts) > 1 else "All failed invoices stored"


def period_form(start_value: str, end_value: str) -> str:
    """A GET form for the ``from``/``to`` query parameters (dates, ``to`` inclusive, or timestamps)."""
    return (
        '<form class="period" method="get">'
        f"<label>from <input {_attrs(name='from', value=start_value, placeholder='YYYY-MM-DD', size=20)}></label>"
        f"<label>to <input {_attrs(name='to', value=end_value, placeholder='YYYY-MM-DD', size=20)}></label>"
        '<button type="submit">Show</button></form>'
    )


STYLE = f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; background: #f7fafc; color: {TEXT_COLOR};
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif; }}
main {{ max-width: 1200px; margin: 0 auto; padding: 20px 24px 32px; }}
header {{ display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between; gap: 8px 24px; }}
h1 {{ font-size: 22px; margin: 0; }}
.period-text {{ color: {MUTED_COLOR}; margin: 2px 0 0; }}
form.period {{ display: flex; gap: 8px; align-items: center; color: {MUTED_COLOR}; }}
form.period input {{ font: inherit; padding: 3px 6px; border: 1px solid #cbd5e0; border-radius: 4px; }}
form.period button {{ font: inherit; padding: 3px 12px; border: 1px solid {BAR_COLOR}; border-radius: 4px;
  background: #fff; color: {BAR_COLOR}; }}
/* Two rows of four columns: the per-currency tiles take two columns each, for their tables. */
.tiles {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 18px 0; }}
.tile.money {{ grid-column: span 2; }}
.tile {{ background: #fff; border: 1px solid {GRID_COLOR}; border-radius: 8px; padding: 12px 14px; }}
.tile-title {{ color: {MUTED_COLOR}; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }}
.tile-value {{ font-size: 26px; font-weight: 650; margin: 4px 0 2px; }}
.tile-sub {{ color: {MUTED_COLOR}; font-size: 12px; }}
table.currencies {{ border-collapse: collapse; font-size: 15px; margin: 2px 0 4px; }}
table.currencies th {{ text-align: left; font-weight: 600; color: {MUTED_COLOR}; padding: 1px 12px 1px 0; }}
table.currencies td {{ text-align: right; padding: 1px 0 1px 14px; font-weight: 600; font-variant-numeric: tabular-nums; }}
table.currencies td + td {{ font-weight: 400; color: {MUTED_COLOR}; }}
table.currencies tr.more td {{ text-align: left; padding-left: 0; font-size: 12px; font-weight: 400; color: {MUTED_COLOR}; }}
.charts {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }}
.chart {{ margin: 0; background: #fff; border: 1px solid {GRID_COLOR}; border-radius: 8px; padding: 12px 14px; }}
.chart[data-chart="line"] {{ grid-column: 1 / -1; }}  /* the time series gets the full width */
#recovery-by-decline-code {{ grid-row: span 2; }}  /* the longest list, beside the two short ones */
@media (max-width: 820px) {{
  .tiles {{ grid-template-columns: 1fr 1fr; }}
  .charts {{ grid-template-columns: 1fr; }}
}}
figcaption {{ font-weight: 650; font-size: 15px; margin-bottom: 6px; }}
.caption {{ color: {MUTED_COLOR}; font-size: 12px; margin: 6px 0 0; }}
.chart-empty {{ color: {MUTED_COLOR}; margin: 24px 0; }}
svg text {{ font-size: 12px; fill: {TEXT_COLOR}; dominant-baseline: middle; }}
svg text.label {{ text-anchor: end; }}
svg text.value {{ fill: {MUTED_COLOR}; }}
svg text.axis {{ font-size: 11px; fill: {MUTED_COLOR}; }}
svg text.axis.y {{ text-anchor: end; }}
svg text.axis.x {{ text-anchor: middle; }}
svg rect.track {{ fill: #f1f5f9; }}
svg rect.volume {{ fill: {VOLUME_COLOR}; }}
svg line.grid {{ stroke: {GRID_COLOR}; stroke-width: 1; }}
svg polyline.line {{ fill: none; stroke: {BAR_COLOR}; stroke-width: 2; }}
.empty {{ background: #fff; border: 1px dashed #cbd5e0; border-radius: 8px; padding: 40px; text-align: center;
  margin-top: 18px; }}
.empty h2 {{ margin: 0 0 8px; font-size: 20px; }}
footer {{ color: {MUTED_COLOR}; font-size: 12px; margin-top: 16px; }}
section.worklist {{ background: #fff; border: 1px solid {GRID_COLOR}; border-radius: 8px; padding: 12px 14px;
  margin-top: 12px; }}
section.worklist h2 {{ font-weight: 650; font-size: 15px; margin: 0 0 6px; }}
table.worklist {{ width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }}
table.worklist th {{ text-align: left; color: {MUTED_COLOR}; font-size: 12px; font-weight: 600;
  border-bottom: 1px solid {GRID_COLOR}; padding: 4px 8px; }}
table.worklist td {{ padding: 3px 8px; border-bottom: 1px solid #f1f5f9; }}
table.worklist td.number {{ text-align: right; white-space: nowrap; }}
table.worklist th:nth-child(n+3):nth-child(-n+6) {{ text-align: right; }}
"""


def render_dashboard(
    kpis_total: Mapping[str, Any],
    by_week: Mapping[str, Any],
    by_decline: Mapping[str, Any],
    by_attempt: Mapping[str, Any],
    by_policy: Mapping[str, Any],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    form_values: tuple[str, str] = ("", ""),
    control_share: float | None = None,
    generated_at: datetime | None = None,
    worklist: Sequence[Mapping[str, Any]] | None = None,
    worklist_total: int = 0,
    worklist_as_of: datetime | None = None,
) -> str:
    """The whole page: header with the period, headline tiles, four charts (or the empty state), the worklist.

    ``worklist`` holds the first rows of ``GET /v1/recoverable`` (field names as there) and
    ``worklist_total`` the size of the whole list, as of ``worklist_as_of``; without ``worklist``, the
    page has no worklist section.
    """
    if kpis_total["failed_invoices"] == 0:
        filtered = start is not None or end is not None
        content = (
            '<section class="empty" id="empty-state">'
            + ("<h2>No failed invoices in this period</h2>" if filtered else "<h2>No outcomes stored yet</h2>")
            + "<p>The dashboard fills in as the billing scheduler reports its attempts to "
            "<code>POST /v1/outcomes</code>. Only invoices whose first charge failed are counted.</p></section>"
        )
    else:
        charts = [
            recovery_by_week_chart(by_week),
            decline_code_chart(by_decline),
            attempt_number_chart(by_attempt),
            policy_chart(by_policy, control_share),
        ]
        content = headline_tiles(kpis_total) + f'<section class="charts">{"".join(charts)}</section>'
    if worklist is not None:
        content += worklist_table(worklist, worklist_total, worklist_as_of)
    stamp = f" Generated {escape(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}." if generated_at else ""
    return (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>retryopt · recovery KPIs</title><style>{STYLE}</style></head><body><main>"
        "<header><div><h1>Failed-payment recovery</h1>"
        f'<p class="period-text">{escape(period_text(start, end))} (by first failure, UTC)</p></div>'
        f"{period_form(*form_values)}</header>"
        f"{content}"
        "<footer>Figures from <code>GET /v1/kpis</code> and <code>GET /v1/recoverable</code> (definitions in "
        "serving/store/kpis.py and serving/store/worklist.py): a failed invoice is "
        f"one whose first charge failed; it is recovered when a later attempt succeeds.{stamp}</footer>"
        "</main></body></html>"
    )
