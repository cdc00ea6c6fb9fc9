"""The KPI dashboard: its HTML matches /v1/kpis, escapes what callers send, and renders in Chromium.

Run as a script to remake the README's screenshot from ~300 simulated invoices (needs
/usr/bin/chromium)::

    .venv/bin/python tests/serving/test_dashboard.py docs/dashboard.png
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.app import create_app
from serving.dashboard import BAR_COLOR, WORKLIST_ROWS, bar_chart, line_chart
from serving.settings import Settings
from serving.store import DecisionRecord, record_decisions
from tests.records import decision_record

CHROMIUM = Path("/usr/bin/chromium")


# ---------------------------------------------------------------------------------------
# Helpers


class Page(HTMLParser):
    """The elements of a page, each with its attributes and the id of the chart it sits in."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], str | None]] = []
        self._figure: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "figure":
            self._figure = values.get("id")
        self.elements.append((tag, values, self._figure))

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None

    def find(self, tag: str, css_class: str | None = None, chart: str | None = None) -> list[dict[str, str]]:
        """Attributes of the ``tag`` elements with that class, inside that chart."""
        return [
            attrs
            for name, attrs, figure in self.elements
            if name == tag
            and (css_class is None or css_class in attrs.get("class", "").split())
            and (chart is None or figure == chart)
        ]

    def by_id(self, element_id: str) -> dict[str, str]:
        """Attributes of the element with that id."""
        (found,) = [attrs for _, attrs, _ in self.elements if attrs.get("id") == element_id]
        return found


def outcome(attempt_id: str, invoice: str, at: str, ok: bool, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """A `POST /v1/outcomes` body."""
    body = {
        "attempt_id": attempt_id,
        "invoice_id": invoice,
        "customer_id": f"cus_{invoice}",
        "attempted_at": at,
        "succeeded": ok,
        "amount": 1000,
        "currency": "usd",
        "decline_code": None if ok else (code or "insufficient_funds"),
    }
    return {**body, **extra}


# Three weeks (2026-11-02 is a Monday), two decline codes, recoveries at attempts 2 and 3.
HANDFUL = [
    outcome("a1", "in_1", "2026-11-02T10:00:00Z", False, "insufficient_funds"),
    outcome("a2", "in_1", "2026-11-03T10:00:00Z", False, "insufficient_funds"),
    outcome("a3", "in_1", "2026-11-04T10:00:00Z", True),
    outcome("b1", "in_2", "2026-11-03T09:00:00Z", False, "do_not_honor"),
    outcome("b2", "in_2", "2026-11-05T09:00:00Z", True),
    outcome("c1", "in_3", "2026-11-10T12:00:00Z", False, "insufficient_funds"),
    outcome("c2", "in_3", "2026-11-12T12:00:00Z", False, "insufficient_funds"),
    outcome("d1", "in_4", "2026-11-11T08:00:00Z", False, "do_not_honor", amount=2500, currency="eur"),
    outcome("d2", "in_4", "2026-11-12T08:00:00Z", True, amount=2500, currency="eur"),
    outcome("e1", "in_5", "2026-11-17T08:00:00Z", False, "insufficient_funds"),
]


def outcome_bodies(attempts: pd.DataFrame) -> list[dict[str, Any]]:
    """`POST /v1/outcomes` bodies of simulated attempts (contract §1 columns)."""
    bodies = []
    for row in attempts.to_dict("records"):
        body = {
            "attempt_id": row["attempt_id"],
            "invoice_id": row["invoice_id"],
            "customer_id": row["customer_id"],
            "attempted_at": row["attempted_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "succeeded": bool(row["succeeded"]),
            "amount": int(row["amount"]),
            "currency": row["currency"],
            "decline_code": row["decline_code"],
            "network_decline_code": row["network_decline_code"],
            "merchant_advice_code": row["merchant_advice_code"],
            "card_fingerprint": row["card_fingerprint"],
        }
        bodies.append(_present(body))
    return bodies


def _missing(value: Any) -> bool:
    """None, NaN or pd.NA (the simulator's frames use all of them)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The entries that have a value (optional fields are left out of a request)."""
    return {key: value for key, value in values.items() if not _missing(value)}


def decision_request(first: dict[str, Any]) -> dict[str, Any]:
    """A retry-decision request for an invoice right after its first failure (a simulated attempt row)."""
    at = first["attempted_at"]
    card = _present({name: first[f"card_{name}"] for name in ("brand", "funding", "country")})
    attempt = _present(
        {
            "attempt_id": first["attempt_id"],
            "attempted_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "decline_code": first["decline_code"],
            "network_decline_code": first["network_decline_code"],
        }
    )
    return _present(
        {
            "invoice_id": first["invoice_id"],
            "customer_id": first["customer_id"],
            "amount": int(first["amount"]),
            "currency": first["currency"],
            "card": {**card, "exp_month": int(first["card_exp_month"]), "exp_year": int(first["card_exp_year"])},
            "customer_timezone": first["customer_timezone"],
            "attempts": [attempt],
            "now": (at + pd.Timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "window_end": (at + pd.Timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def follow_up_requests(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decision requests a scheduler sends after each failure of one invoice (its rows, oldest first)."""
    first = decision_request(rows[0])
    window_end = rows[0]["attempted_at"] + pd.Timedelta(days=14)
    requests = [first]
    for row in rows[1:]:
        at = row["attempted_at"]
        if row["succeeded"] or at + pd.Timedelta(minutes=5) >= window_end:
            break
        attempt = decision_request(row)["attempts"][0]
        now = (at + pd.Timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        requests.append({**first, "attempts": [*requests[-1]["attempts"], attempt], "now": now})
    return requests


def seed_store(
    client: httpx.Client | TestClient, n_invoices: int, seed: int, decisions_every: int = 0, every_failure: bool = False
) -> None:
    """Post a simulated history through HTTP; with ``decisions_every`` = k, a decision for every k-th invoice first.

    With ``every_failure``, those invoices get a decision after each of their failures, as a scheduler asks again.
    """
    from training.simulate import simulate

    attempts = simulate(n_invoices, seed).attempts
    if decisions_every:
        chosen = attempts["invoice_id"].drop_duplicates().iloc[::decisions_every]
        for _, rows in attempts[attempts["invoice_id"].isin(chosen)].groupby("invoice_id", sort=False):
            records = rows.to_dict("records")
            for body in follow_up_requests(records) if every_failure else [decision_request(records[0])]:
                response = client.post("/v1/retry-decisions", json=body)
                assert response.status_code == 200, response.text
    for body in outcome_bodies(attempts):
        response = client.post("/v1/outcomes", json=body)
        assert response.status_code in (200, 201), response.text


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """`retryopt serve` in a thread (uvicorn on a free loopback port); yields the base URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def screenshot(url: str, out: Path, height: int = 1600) -> None:
    """Headless Chromium's screenshot of ``url`` at 1280 px wide."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # CI runs as root in a container, where the sandbox can't start
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size=1280,{height}",
            f"--screenshot={out}",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"


def load_rgb(path: Path) -> np.ndarray:
    """The PNG as an (h, w, 3) uint8 array, with Pillow when installed, else matplotlib."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except ImportError:
        import matplotlib.image

        pixels = matplotlib.image.imread(str(path))[..., :3]  # floats in 0..1 for PNGs
        return np.asarray(np.round(pixels * 255), dtype=np.uint8)


def pixels_near(rgb: np.ndarray, color: str, tolerance: int = 8) -> int:
    """How many pixels are within ``tolerance`` of ``color`` on every channel."""
    target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(rgb.astype(np.int16) - target) <= tolerance).all(axis=-1).sum())


def require_chromium() -> None:
    """Skip without Chromium locally; in CI (``CI`` set) its absence is a failure, not a skip."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install it with `apt-get install chromium` (.ci/run does in CI)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def store_settings(bundle_dir: Path, tmp_path: Path) -> Settings:
    """Settings serving the tiny model with an empty store of its own."""
    return Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 'store.db'}")


@pytest.fixture
def fresh(store_settings: Settings) -> Iterator[TestClient]:
    """A client on an empty store."""
    with TestClient(create_app(store_settings)) as client:
        yield client


@pytest.fixture
def handful(fresh: TestClient) -> TestClient:
    """A client whose store holds the HANDFUL outcomes."""
    for body in HANDFUL:
        assert fresh.post("/v1/outcomes", json=body).status_code == 201
    return fresh


# ---------------------------------------------------------------------------------------
# The page over HTTP


class TestDashboardPage:
    def test_html_with_four_charts_and_their_elements(self, handful: TestClient) -> None:
        response = handful.get("/dashboard")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = Page(response.text)
        charts = {attrs["id"]: attrs["data-chart"] for attrs in page.find("figure", "chart")}
        assert charts == {
            "recovery-by-week": "line",
            "recovery-by-decline-code": "bar",
            "recoveries-by-attempt": "bar",
            "recovery-by-policy": "bar",
        }
        assert len(page.find("circle", "point", "recovery-by-week")) == 3  # three weeks
        assert len(page.find("rect", "bar", "recovery-by-decline-code")) == 2
        assert len(page.find("rect", "bar", "recoveries-by-attempt")) == 2  # attempts 2 and 3
        assert [b["data-label"] for b in page.find("rect", "bar", "recovery-by-policy")] == ["no decision"]
        assert "No control group configured" in response.text
        assert "empty-state" not in response.text

    def test_figures_match_the_kpis_endpoint(self, handful: TestClient) -> None:
        page = Page(handful.get("/dashboard").text)
        kpis = handful.get("/v1/kpis").json()
        assert int(page.by_id("tile-failed-invoices")["data-value"]) == kpis["failed_invoices"] == 5
        assert float(page.by_id("tile-recovery-rate")["data-value"]) == kpis["recovery_rate"]
        assert float(page.by_id("tile-involuntary-churn")["data-value"]) == kpis["involuntary_churn_rate"]
        assert float(page.by_id("tile-median-hours")["data-value"]) == kpis["median_hours_to_recovery"]
        for currency in ("usd", "eur"):
            recovered = int(page.by_id(f"tile-amount-recovered-{currency}")["data-value"])
            assert recovered == kpis["recovered_amount"][currency]
            assert int(page.by_id(f"tile-recovered-ltv-{currency}")["data-value"]) == kpis["recovered_ltv"][currency]
        assert kpis["recovered_amount"] == {"eur": 2500, "usd": 2000}

        weeks = handful.get("/v1/kpis", params={"group_by": "week"}).json()["groups"]
        points = page.find("circle", "point", "recovery-by-week")
        assert [(p["data-label"], float(p["data-value"])) for p in points] == [
            (g["group"], g["recovery_rate"]) for g in weeks
        ]
        codes = handful.get("/v1/kpis", params={"group_by": "decline_code"}).json()["groups"]
        bars = {b["data-label"]: float(b["data-value"]) for b in page.find("rect", "bar", "recovery-by-decline-code")}
        assert bars == {g["group"]: g["recovery_rate"] for g in codes}
        attempts = handful.get("/v1/kpis", params={"group_by": "attempt_number"}).json()["groups"]
        recovered = {g["group"]: g["recovered_invoices"] for g in attempts if g["group"] != "not_recovered"}
        shares = [float(b["data-value"]) for b in page.find("rect", "bar", "recoveries-by-attempt")]
        assert shares == [recovered[n] / sum(recovered.values()) for n in sorted(recovered, key=int)]
        assert shares == [2 / 3, 1 / 3]

    def test_period_is_passed_to_the_kpis(self, handful: TestClient) -> None:
        page = Page(handful.get("/dashboard", params={"from": "2026-11-09", "to": "2026-11-16T00:00:00Z"}).text)
        kpis = handful.get("/v1/kpis", params={"from": "2026-11-09T00:00:00Z", "to": "2026-11-16T00:00:00Z"}).json()
        assert int(page.by_id("tile-failed-invoices")["data-value"]) == kpis["failed_invoices"] == 2
        # A date as `to` includes that day.
        through = Page(handful.get("/dashboard", params={"to": "2026-11-03"}).text)
        assert int(through.by_id("tile-failed-invoices")["data-value"]) == 2
        nothing = handful.get("/dashboard", params={"from": "2030-01-01"})
        assert "No failed invoices in this period" in nothing.text

    def test_bad_period_names_the_parameter(self, handful: TestClient) -> None:
        response = handful.get("/dashboard", params={"from": "2026-11-02T10:00:00"})  # no zone
        assert response.status_code == 422
        assert response.json()["field"] == "from"
        response = handful.get("/dashboard", params={"from": "2026-11-10", "to": "2026-11-01"})
        assert response.json()["field"] == "to"

    def test_empty_store_shows_the_empty_state(self, fresh: TestClient) -> None:
        response = fresh.get("/dashboard")
        assert response.status_code == 200
        assert "No outcomes stored yet" in response.text
        assert Page(response.text).find("figure") == []

    def test_caller_text_is_escaped(self, fresh: TestClient) -> None:
        code = "<script>alert(1)</script>"
        assert fresh.post("/v1/outcomes", json=outcome("x1", "in_x", "2026-11-02T10:00:00Z", False, code)).is_success
        html = fresh.get("/dashboard").text
        assert "<script" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        labels = [b["data-label"] for b in Page(html).find("rect", "bar", "recovery-by-decline-code")]
        assert labels == [code]  # the parser unescapes: the page shows the text as it was sent

    def test_page_loads_nothing_from_anywhere(self, handful: TestClient) -> None:
        response = handful.get("/dashboard")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        page = Page(response.text)
        assert page.find("script") == [] and page.find("link") == [] and page.find("img") == []
        assert "http://" not in response.text and "https://" not in response.text


# ---------------------------------------------------------------------------------------
# The worklist on the page

WORK_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def open_decision(index: int, *, customer: str | None = None, stop: bool = False) -> DecisionRecord:
    """A decision a day before WORK_NOW with its window still open; recovery_probability grows with the index."""
    return decision_record(
        f"dec_{index}",
        f"in_w{index:02d}",
        WORK_NOW - timedelta(days=1),
        customer_id=customer or f"cus_w{index}",
        amount=10_000,
        action="stop" if stop else "retry",
        retry_at=None if stop else WORK_NOW + timedelta(hours=index + 1),
        success_probability=None if stop else 0.2,
        expected_recovered_amount=0,
        window_end=WORK_NOW + timedelta(days=5),
        next_step="request_new_payment_method" if stop else None,
        recovery_probability=0.0 if stop else index / 100,
    )


class TestWorklist:
    def test_no_open_invoice_says_so(self, handful: TestClient) -> None:
        response = handful.get("/dashboard")
        assert 'id="worklist"' in response.text
        assert "No open failed invoice" in response.text
        assert Page(response.text).find("tr", "open-invoice") == []

    def test_top_rows_match_the_recoverable_endpoint(self, fresh: TestClient) -> None:
        decisions = [open_decision(i) for i in range(1, 25)] + [open_decision(0, customer="<b>cus</b>", stop=True)]
        with fresh.app.state.sessions() as session:  # type: ignore[attr-defined]
            record_decisions(session, decisions)
        response = fresh.get("/dashboard", params={"now": "2026-11-20T12:00:00Z"})
        assert response.status_code == 200
        rows = Page(response.text).find("tr", "open-invoice")
        expected = fresh.get("/v1/recoverable", params={"now": "2026-11-20T12:00:00Z", "limit": WORKLIST_ROWS}).json()
        assert len(rows) == WORKLIST_ROWS == len(expected["invoices"])
        assert [(r["data-invoice"], int(r["data-value"])) for r in rows] == [
            (item["invoice_id"], item["expected_recoverable_amount"]) for item in expected["invoices"]
        ]
        assert rows[0]["data-invoice"] == "in_w24" and rows[0]["data-value"] == "2400"
        assert "the top 20 of 25" in response.text
        assert "USD 100.00" in response.text and "24.0%" in response.text  # amount, probability
        # The stop, with its next step, is the 25th row: only on a page of its own.
        assert "request new payment method" not in response.text
        everything = fresh.get("/v1/recoverable", params={"now": "2026-11-20T12:00:00Z"}).json()
        assert everything["invoices"][-1]["next_step"] == "request_new_payment_method"

    def test_caller_text_in_the_worklist_is_escaped(self, fresh: TestClient) -> None:
        with fresh.app.state.sessions() as session:  # type: ignore[attr-defined]
            record_decisions(session, [open_decision(0, customer="<b>cus</b>", stop=True)])
        html = fresh.get("/dashboard", params={"now": "2026-11-20"}).text
        assert "<b>cus" not in html and "&lt;b&gt;cus&lt;/b&gt;" in html
        (row,) = Page(html).find("tr", "open-invoice")
        assert row["data-next-step"] == "request_new_payment_method"

    def test_worklist_is_as_of_now(self, fresh: TestClient) -> None:
        with fresh.app.state.sessions() as session:  # type: ignore[attr-defined]
            record_decisions(session, [open_decision(5)])
        assert len(Page(fresh.get("/dashboard", params={"now": "2026-11-20"}).text).find("tr", "open-invoice")) == 1
        assert Page(fresh.get("/dashboard", params={"now": "2026-12-31"}).text).find("tr", "open-invoice") == []
        response = fresh.get("/dashboard", params={"now": "2026-11-20T12:00:00"})  # no zone
        assert (response.status_code, response.json()["field"]) == (422, "now")


def test_dashboard_needs_the_api_key_when_one_is_set(bundle_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", api_key=SecretStr("k3y"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/dashboard").status_code == 401
        assert client.get("/dashboard", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/dashboard", params={"key": "k3y"}).status_code == 401  # header only
        assert client.get("/dashboard", headers={"X-API-Key": "k3y"}).status_code == 200


def test_control_arm_is_compared_with_learned(bundle_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=bundle_dir, database_url=f"sqlite:///{tmp_path / 's.db'}", control_share=0.5)
    with TestClient(create_app(settings)) as client:
        seed_store(client, 40, seed=3, decisions_every=1)
        page = Page(client.get("/dashboard").text)
        arms = {b["data-label"] for b in page.find("rect", "bar", "recovery-by-policy")}
        assert arms == {"learned", "control"}
        assert "Learned minus control" in client.get("/dashboard").text


# ---------------------------------------------------------------------------------------
# The chart functions


def test_bar_chart_draws_one_bar_per_value() -> None:
    svg = bar_chart("c", ["a", "b<"], [0.5, 1.0], "T&", lambda v: f"{v:.0%}", max_value=1.0)
    page = Page(svg)
    widths = [float(b["width"]) for b in page.find("rect", "bar", "c")]
    assert widths[1] == 2 * widths[0]
    assert "b&lt;" in svg and "T&amp;" in svg


def test_line_chart_breaks_at_gaps() -> None:
    svg = line_chart("c", ["w1", "w2", "w4"], [0.2, 0.4, 0.3], "T", str, positions=[0, 1, 3])
    page = Page(svg)
    assert len(page.find("circle", "point", "c")) == 3
    assert len(page.find("polyline", "line", "c")) == 2  # w2 → w4 skips a week


# ---------------------------------------------------------------------------------------
# In a real browser


@pytest.mark.browser
def test_chromium_renders_the_charts(store_settings: Settings, tmp_path: Path) -> None:
    require_chromium()
    with served(store_settings) as base, httpx.Client(base_url=base, timeout=30) as client:
        seed_store(client, 60, seed=11)
        assert client.get("/dashboard").status_code == 200
        out = tmp_path / "dash.png"
        screenshot(f"{base}/dashboard", out)
    rgb = load_rgb(out)
    assert rgb.shape[:2] == (1600, 1280)
    # Bars, points and the line are drawn in BAR_COLOR: thousands of its pixels mean the SVG rendered.
    assert pixels_near(rgb, BAR_COLOR) > 2_000
    assert (rgb < 250).any(axis=-1).mean() > 0.05  # and the page is not blank


def busiest_worklist_time(client: httpx.Client) -> str:
    """The month start (the simulator's 2025) with the most open invoices, so the README's worklist has rows."""

    def open_invoices(at: str) -> int:
        response = client.get("/v1/recoverable", params={"now": at, "limit": 1})
        assert response.status_code == 200, response.text
        total: int = response.json()["total"]
        return total

    return max((f"2025-{month:02d}-01T12:00:00Z" for month in range(2, 13)), key=open_invoices)


def crop_to_page(path: Path, margin: int = 8) -> None:
    """Cut the blank band below the page (the screenshot is taller than the page), keeping ``margin`` pixels."""
    from PIL import Image

    rgb = load_rgb(path)
    background = rgb[-1, 0].astype(np.int16)
    used = np.flatnonzero((np.abs(rgb.astype(np.int16) - background) > 4).any(axis=(1, 2)))
    bottom = min(int(used[-1]) + 1 + margin, rgb.shape[0]) if used.size else rgb.shape[0]
    with Image.open(path) as image:
        image.crop((0, 0, image.width, bottom)).save(path)


def make_readme_screenshot(out: Path) -> None:
    """docs/dashboard.png: ~300 simulated invoices, each decided after every failure (half of them control).

    Decisions come from the tests' tiny model: the outcomes are the simulator's either way, and
    the shipped model may lag the feature code while it is being changed. The worklist is shown as
    of the month start with the most open invoices (the simulated year is in the past).
    """
    from conftest import train_tiny_bundle  # this directory is sys.path[0] when run as a script

    with tempfile.TemporaryDirectory(prefix="retryopt-dashboard-") as scratch:
        bundle = train_tiny_bundle(Path(scratch) / "bundle")
        store = f"sqlite:///{Path(scratch) / 'store.db'}"
        settings = Settings(model_dir=bundle, database_url=store, control_share=0.5)
        with served(settings) as base, httpx.Client(base_url=base, timeout=60) as client:
            seed_store(client, 300, seed=5, decisions_every=1, every_failure=True)
            now = busiest_worklist_time(client)
            raw = Path(scratch) / "dash.png"
            screenshot(f"{base}/dashboard?now={now}", raw, height=2600)
            crop_to_page(raw)  # the page's height: no blank band below
            shutil.copyfile(raw, out)


if __name__ == "__main__":
    make_readme_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))
