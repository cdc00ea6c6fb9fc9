"""Schemathesis fuzzing of every endpoint in the app's own OpenAPI document, in process (ASGI, no network).

Each operation gets generated requests (schema examples, boundary values from the coverage phase,
then random valid and invalid bodies and queries); every response must be a non-5xx with a status,
content type and body that the OpenAPI document declares. The generation is derandomized, so CI
sees the same cases on every run; set ``RETRYOPT_FUZZ_RANDOM=1`` to explore new ones locally.

The app is the real factory (``create_app``) serving the tiny bundle of ``conftest`` with a SQLite
store of its own, so outcomes and card updates written here do not leak into other tests. The
write endpoints are fuzzed once more against PostgreSQL (the production store, which refuses text
SQLite takes, such as NUL), in a schema of their own; skipped when no server is reachable.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from serving.app import create_app
from serving.schemas import CARD_UPDATE_EXAMPLE, DECISION_EXAMPLE, OUTCOME_EXAMPLE
from serving.settings import Settings

# The checks every response must pass: no 5xx, a declared status and content type, a body matching the schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Random cases per operation, on top of the schema examples and the coverage phase's boundary values.
# The batch endpoint decides up to dozens of invoices per case, so it gets fewer; the whole module
# stays well under 90 s on a 2-core machine.
MAX_EXAMPLES = 120
MAX_EXAMPLES_BATCH = 50
MAX_EXAMPLES_POSTGRES = 40
MAX_EXAMPLES_TEXT = 80
POSTGRES_URL = os.environ.get("RETRYOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BATCH_PATH = "/v1/retry-decisions/batch"
BATCH_FUZZ_MAX_ITEMS = 20
# Health checks that flag slow or heavily filtered generation: expected for deep request bodies.
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
DERANDOMIZE = os.environ.get("RETRYOPT_FUZZ_RANDOM", "") != "1"


@pytest.fixture(scope="module")
def fuzz_app(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """A fresh app on the tiny bundle with an empty store; schemathesis runs its lifespan."""
    store = tmp_path_factory.mktemp("fuzz-store") / "retryopt.db"
    return create_app(Settings(model_dir=bundle_dir, database_url=f"sqlite:///{store}", api_key=None))


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL schema (dropped afterwards), or a skip naming why there is none."""
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    name = f"retryopt_fuzz_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc).splitlines()[0]}")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_fuzz_app(bundle_dir: Path, postgres_url: str) -> FastAPI:
    """The same app on PostgreSQL; schemathesis runs its lifespan."""
    return create_app(Settings(model_dir=bundle_dir, database_url=postgres_url, api_key=None))


def fuzzable(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the batch capped at ``BATCH_FUZZ_MAX_ITEMS`` requests for generation.

    The coverage phase sends every boundary, and a 10,000-decision batch is a load test
    (bench/), not a fuzz case: it takes seconds per call here and would crowd out everything else.
    The real limit is still enforced by the app and checked in test_bad_input.
    """
    capped = copy.deepcopy(document)
    capped["components"]["schemas"]["BatchDecisionRequest"]["properties"]["requests"]["maxItems"] = BATCH_FUZZ_MAX_ITEMS
    return capped


def openapi_schema(*, coverage: bool) -> schemathesis.BaseSchema:
    """The OpenAPI document of the app factory; building an app loads no model and opens no store.

    Loaded eagerly so every operation is its own test item (``from_fixture`` schemas need a
    private pytest attribute that pytest 9 removed); the cases are sent to ``fuzz_app``.
    Without ``coverage``, only the schema examples and the random cases run: the coverage
    phase sends every boundary and enum value (170 currencies, 250 countries) whatever
    ``max_examples`` says, which is worth doing once per request schema, not three times.
    """
    config = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": coverage}}})
    return schemathesis.openapi.from_dict(fuzzable(create_app(Settings(api_key=None)).openapi()), config=config)


def summary(counts: Counter[tuple[str, str]]) -> str:
    """One line: the cases sent, in total and per operation by status class."""
    operations = sorted({label for label, _ in counts})
    parts = []
    for label in operations:
        classes = sorted((status, n) for (op, status), n in counts.items() if op == label)
        parts.append(f"{label}: " + " ".join(f"{status} {n}" for status, n in classes))
    return f"schemathesis: {sum(counts.values())} cases over {len(operations)} operations ({'; '.join(parts)})"


@pytest.fixture(scope="module")
def fuzz_cases(request: pytest.FixtureRequest) -> Iterator[Counter[tuple[str, str]]]:
    """Counts the cases sent per operation and status class; prints the total when the module is done."""
    counts: Counter[tuple[str, str]] = Counter()
    yield counts
    line = summary(counts)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # straight to the terminal, even under -q
            reporter.write_line(f"\n{line}")


schema = openapi_schema(coverage=True)
light_schema = openapi_schema(coverage=False)


@schema.exclude(path=BATCH_PATH).parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=SUPPRESSED, derandomize=DERANDOMIZE, database=None
)
def test_every_operation_conforms(
    case: schemathesis.Case, fuzz_app: FastAPI, fuzz_cases: Counter[tuple[str, str]]
) -> None:
    """No generated request gets a 5xx or an answer the OpenAPI document does not declare."""
    response = case.call_and_validate(app=fuzz_app, checks=CHECKS)
    fuzz_cases[case.operation.label, f"{response.status_code // 100}xx"] += 1


@light_schema.include(path=BATCH_PATH).parametrize()
@settings(
    max_examples=MAX_EXAMPLES_BATCH,
    deadline=None,
    suppress_health_check=SUPPRESSED,
    derandomize=DERANDOMIZE,
    database=None,
)
def test_batch_conforms(case: schemathesis.Case, fuzz_app: FastAPI, fuzz_cases: Counter[tuple[str, str]]) -> None:
    """The batch endpoint, with fewer random cases (each decides many invoices) and no coverage phase.

    Its items are the single endpoint's request schema, whose boundaries the first test covers.
    """
    response = case.call_and_validate(app=fuzz_app, checks=CHECKS)
    fuzz_cases[case.operation.label, f"{response.status_code // 100}xx"] += 1


@pytest.mark.postgres
@light_schema.include(method="POST").exclude(path=BATCH_PATH).parametrize()
@settings(
    max_examples=MAX_EXAMPLES_POSTGRES,
    deadline=None,
    suppress_health_check=SUPPRESSED,
    derandomize=DERANDOMIZE,
    database=None,
)
def test_writes_conform_on_postgresql(
    case: schemathesis.Case, postgres_fuzz_app: FastAPI, fuzz_cases: Counter[tuple[str, str]]
) -> None:
    """Decisions, outcomes and card updates stored in PostgreSQL: still no 5xx, still as documented."""
    response = case.call_and_validate(app=postgres_fuzz_app, checks=CHECKS)
    fuzz_cases[f"{case.operation.label} (PostgreSQL)", f"{response.status_code // 100}xx"] += 1


# --- free text, the one place schema-driven generation rarely reaches --------------------------------
# A random string only gets to the store inside an otherwise valid request, which random bodies
# seldom are. So: the contract's examples, with one free-text field replaced by any text, including
# control characters and unpaired surrogates (sent as JSON escapes). This found two 500s: NUL
# (PostgreSQL refuses it) and lone surrogates (no store can encode them).

FREE_TEXT_FIELDS: list[tuple[str, dict[str, Any], tuple[str | int, ...]]] = [
    *[
        ("/v1/retry-decisions", DECISION_EXAMPLE, path)
        for path in [
            ("invoice_id",),
            ("customer_id",),
            ("card", "brand"),
            ("card", "funding"),
            ("card", "fingerprint"),
            ("attempts", 0, "attempt_id"),
            ("attempts", 0, "decline_code"),
            ("attempts", 0, "network_decline_code"),
        ]
    ],
    *[
        ("/v1/outcomes", OUTCOME_EXAMPLE, (name,))
        for name in ["attempt_id", "invoice_id", "customer_id", "decline_code", "card_fingerprint", "decision_id"]
    ],
    *[
        ("/v1/card-updates", CARD_UPDATE_EXAMPLE, path)
        for path in [("update_id",), ("customer_id",), ("card", "brand"), ("card", "fingerprint")]
    ],
]
ANY_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cc", "Cs", "Zs", "Nd"]), max_size=20),
)


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: str) -> dict[str, Any]:
    """A copy of body with the value at path replaced."""
    out = copy.deepcopy(body)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def text_client(
    request: pytest.FixtureRequest, bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """A client on a fresh store of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('text-store') / 'retryopt.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with TestClient(create_app(Settings(model_dir=bundle_dir, database_url=url, api_key=None))) as client:
        yield client


@settings(max_examples=MAX_EXAMPLES_TEXT, deadline=None, derandomize=DERANDOMIZE, database=None)
@given(field=st.sampled_from(FREE_TEXT_FIELDS), value=ANY_TEXT, unique=st.uuids())
def test_any_free_text_is_stored_or_refused(
    text_client: TestClient, field: tuple[str, dict[str, Any], tuple[str | int, ...]], value: str, unique: uuid.UUID
) -> None:
    """Whatever text a free-text field holds, the answer is a 2xx or a 422 naming that field, never a 5xx."""
    url, example, path = field
    body = with_value(example, path, value)
    for key in ("attempt_id", "update_id"):  # a fresh id, so a repeat is not a 409 for other content
        if key in body and path != (key,):
            body[key] = f"{key}_{unique.hex}"
    response = text_client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 201, 422), response.text
    if response.status_code == 422:
        errors = response.json()["errors"]
        assert {e["field"] for e in errors} == {".".join(map(str, path))}, errors
