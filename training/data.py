"""Load and validate the attempts dataset (contract section 1) for training.

Every row is checked column by column, vectorised. Rows that break the contract are never
dropped silently: each one is listed in ``LoadReport.errors`` with its 1-based data row
number, and every other row of an invoice with a bad row is rejected with it, because a
partial payment history would corrupt the point-in-time features built from it.
"""

from __future__ import annotations

import csv
import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.contract import CONTRACT_COLUMNS, REQUIRED_COLUMNS
from features.distinct import by_distinct
from features.geo import COUNTRIES, resolve_timezones, timezone_by_lower_name
from features.money import CURRENCY_EXPONENTS

logger = logging.getLogger(__name__)

# Contract section 1 (features.contract), then the column this loader derives.
ATTEMPT_COLUMNS: tuple[str, ...] = (*CONTRACT_COLUMNS, "attempt_number")

CARD_FUNDINGS = frozenset({"credit", "debit", "prepaid", "unknown"})
BILLING_INTERVALS = frozenset({"day", "week", "month", "year"})
# Above this an amount is a unit or parsing mistake, not a subscription charge
# (10^12 minor units is ten billion dollars).
MAX_AMOUNT = 10**12
# Wide enough for any real attempt or customer, and inside datetime64[ns]'s range.
TIMESTAMP_MIN = pd.Timestamp("1970-01-01", tz="UTC")
TIMESTAMP_MAX = pd.Timestamp("2100-01-01", tz="UTC")

_TRUE_WORDS = frozenset({"true", "t", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "0"})
# What tools write for a missing value once they have turned it into text: str(float("nan")),
# str(None), pandas' <NA> and NaT. Read as missing, so a required column reports the row instead of
# keeping "nan" as a card brand or a decline code, or "None" as an invoice id that merges unrelated
# rows. "NA" (Namibia) and "null" (a possible id) stay values, as the CSV reader keeps them.
_MISSING_WORDS = pa.array(["nan", "NaN", "NAN", "-nan", "None", "none", "NONE", "<NA>", "NaT", "nat", "NAT"])
# An ISO 8601 time of day followed by a UTC offset ("Z", "+02:00", "+0200", "-05").
_OFFSET_PATTERN = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_STR: Final = "str"  # pandas' default string dtype: Arrow-backed, NaN for missing
_MISSING = "required value is missing"


class AttemptsDataError(Exception):
    """The file can't be used at all; str() is a one-line reason."""


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no boolean equality
class LoadReport:
    """What a load read, kept and rejected (one row per problem in ``errors``)."""

    rows_read: int
    rows_valid: int
    errors: pd.DataFrame  # row (1-based data row, header excluded), column, value, reason

    @property
    def rows_rejected(self) -> int:
        """Rows left out of the frame, for any reason."""
        return self.rows_read - self.rows_valid


@dataclass
class _Issues:
    """Row problems found so far: (column, row mask, reason or one reason per flagged row)."""

    found: list[tuple[str, np.ndarray, str | np.ndarray]] = field(default_factory=list)

    def add(self, column: str, mask: pd.Series | np.ndarray, reason: str | np.ndarray) -> None:
        """Record that the rows in ``mask`` break the contract in ``column``."""
        flags = np.asarray(mask, dtype=bool)
        if flags.any():
            self.found.append((column, flags, reason))

    def rejected(self, n: int) -> np.ndarray:
        """Mask of rows with at least one problem."""
        out = np.zeros(n, dtype=bool)
        for _, flags, _ in self.found:
            out |= flags
        return out


# ---------------------------------------------------------------------------------------
# Public API


def load_attempts(path: str | Path) -> tuple[pd.DataFrame, LoadReport]:
    """Read a CSV or Parquet attempts file and validate it (see ``validate_attempts``)."""
    return validate_attempts(_read_file(Path(path)))


def validate_attempts(raw: pd.DataFrame) -> tuple[pd.DataFrame, LoadReport]:
    """Check and type every contract column; return valid rows and a report of the others."""
    duplicated = sorted({c for c in raw.columns[raw.columns.duplicated()] if c in CONTRACT_COLUMNS})
    if duplicated:
        raise AttemptsDataError(f"duplicate column(s): {', '.join(duplicated)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise AttemptsDataError(f"missing required column(s): {', '.join(missing)}")
    n = len(raw)
    if n == 0:
        raise AttemptsDataError("no data rows")
    raw = raw.reset_index(drop=True)
    issues = _Issues()
    typed = _typed_columns(raw, issues)
    _check_duplicate_attempts(typed["attempt_id"], issues)
    own = issues.rejected(n)
    _reject_whole_invoices(typed["invoice_id"], own, issues)
    keep = ~issues.rejected(n)
    errors = _errors_frame(raw, issues)
    if not keep.any():
        raise AttemptsDataError(_no_valid_rows_message(n, errors))
    frame = _assemble(typed, keep)
    report = LoadReport(rows_read=n, rows_valid=int(keep.sum()), errors=errors)
    if report.rows_rejected:
        # info, not warning: callers get the count in the report and decide how loud to be.
        logger.info(
            "attempts: %d of %d rows rejected (%d problems)",
            report.rows_rejected,
            n,
            len(errors),
        )
    return frame, report


def write_attempts(frame: pd.DataFrame, path: str | Path) -> None:
    """Write an attempts frame as CSV (ISO 8601 +00:00 timestamps) or Parquet, by extension."""
    path = Path(path)
    kind = _file_kind(path)
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            out[column] = values.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(values.dtype):
            # Writing naive times would produce a file the loader rejects row by row.
            raise ValueError(f"column {column} has timestamps without a time zone")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        out.to_parquet(path, index=False)
        return
    for column in out.columns:
        values = out[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            out[column] = _iso_utc(values)
        elif pd.api.types.is_bool_dtype(values.dtype):
            # Lower-case words, as most tools other than pandas write booleans.
            out[column] = values.map({True: "true", False: "false"})
    out.to_csv(path, index=False)


# ---------------------------------------------------------------------------------------
# Reading files


def _file_kind(path: Path) -> str:
    """'csv' or 'parquet' from the file name, else a one-line error."""
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise AttemptsDataError(f"unsupported file type: {path.name} (expected .csv, .csv.gz, .parquet or .pq)")


def _read_file(path: Path) -> pd.DataFrame:
    """Read the contract columns of a file, as strings for CSV, as stored for Parquet."""
    kind = _file_kind(path)
    if not path.is_file():
        raise AttemptsDataError("file not found")
    if path.stat().st_size == 0:
        raise AttemptsDataError("file is empty")
    if kind == "csv":
        return _read_csv(path)
    return _read_parquet(path)


def _one_line(exc: BaseException) -> str:
    """First line of an exception's message, so error messages stay one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _csv_header(path: Path) -> list[str]:
    """Column names from the first line (the BOM of Excel exports removed)."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise AttemptsDataError(f"cannot read the file: {_one_line(exc)}") from exc
    names = [name.strip() for name in next(csv.reader([first]), [])]
    if not any(names):
        raise AttemptsDataError("file is empty")
    return names


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with every contract column as text, so validation sees values as written."""
    names = _csv_header(path)
    duplicated = sorted({n for n in names if n in CONTRACT_COLUMNS and names.count(n) > 1})
    if duplicated:
        raise AttemptsDataError(f"duplicate column(s): {', '.join(duplicated)}")
    wanted = [c for c in CONTRACT_COLUMNS if c in names]
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            # Only "" is missing: "NA" is Namibia and "null" could be a real id.
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(wanted, pa.string()),
                include_columns=wanted,
                strings_can_be_null=True,
                null_values=[""],
            ),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        )
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise AttemptsDataError(f"not a readable CSV file: {_one_line(exc)}") from exc
    return table.to_pandas()


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read the contract columns of a Parquet file with their stored types."""
    try:
        names = pq.read_schema(path).names
        wanted = [c for c in CONTRACT_COLUMNS if c in names]
        return pq.read_table(path, columns=wanted).to_pandas()
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise AttemptsDataError(f"not a readable Parquet file: {_one_line(exc)}") from exc


# ---------------------------------------------------------------------------------------
# Column parsers: each returns the typed column and records the rows it rejects.


def _plain(values: pd.Series) -> pd.Series:
    """Unwrap categorical and pyarrow-typed columns so the parsers see ordinary dtypes."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    if isinstance(values.dtype, pd.ArrowDtype):
        values = pd.Series(pa.array(values.array).to_pandas(), index=values.index)
    return values


def _is_number_dtype(values: pd.Series) -> bool:
    """True for int/float columns (nullable ones too), not for booleans."""
    dtype = values.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _text(values: pd.Series) -> pd.Series:
    """Any column as stripped strings, "" and "nan"/"None" as missing; integral floats lose their '.0'."""
    values = _plain(values)
    if pd.api.types.is_float_dtype(values.dtype):
        known = values.dropna()
        if (np.isfinite(known) & (known == np.floor(known)) & (np.abs(known) < 2**53)).all():
            values = values.astype("Int64")  # 51.0 (an int column that had NaNs) -> "51"
    text = values.astype(_STR).str.strip()
    keep = (text != "").to_numpy(dtype=bool, na_value=False) & ~_missing_words(text)
    # `where` copies every string; a clean column (the usual case) has nothing to blank out.
    return text if keep[text.notna().to_numpy()].all() else text.where(keep)


def _missing_words(text: pd.Series) -> np.ndarray:
    """Mask of values spelled as a missing value (``_MISSING_WORDS``), via Arrow's hash lookup."""
    found = pc.is_in(pa.array(text.array), value_set=_MISSING_WORDS)
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _required(text: pd.Series, column: str, issues: _Issues) -> None:
    """Flag rows where a required column has no value."""
    issues.add(column, text.isna(), _MISSING)


def _choice(values: pd.Series, allowed: frozenset[str], column: str, issues: _Issues) -> pd.Series:
    """Lower-cased text that must be one of ``allowed`` when present."""
    text = _text(values).str.lower()
    issues.add(
        column,
        text.notna() & ~text.isin(allowed),
        f"must be one of: {', '.join(sorted(allowed))}",
    )
    return text


def _timestamps(values: pd.Series, column: str, issues: _Issues, *, required: bool) -> pd.Series:
    """UTC datetime64[ns]; text must be ISO 8601 with an offset, typed values tz-aware."""
    values = _plain(values)
    present = values.notna()
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        issues.add(column, present, "timestamp without UTC offset")
        parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    else:
        text = _text(values)
        present = text.notna()
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        unparsed = present & parsed.isna()
        issues.add(column, unparsed, "not an ISO 8601 timestamp")
        # to_datetime(utc=True) would silently read a naive time as UTC.
        naive = present & ~unparsed & ~_matches(text, _OFFSET_PATTERN)
        issues.add(column, naive, "timestamp without UTC offset")
        parsed = parsed.where(~naive)
    if required:
        issues.add(column, ~present, _MISSING)
    outside = parsed.notna() & ((parsed < TIMESTAMP_MIN) | (parsed >= TIMESTAMP_MAX))
    issues.add(column, outside, "timestamp out of range (1970-01-01 to 2100-01-01)")
    return parsed.where(~outside).astype("datetime64[ns, UTC]")


def _matches(text: pd.Series, pattern: str) -> np.ndarray:
    """Regex search on string values via Arrow (RE2), ~10x faster than pandas' fallback."""
    found = pc.match_substring_regex(pa.array(text.array), pattern)
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _integers(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(present, is an integer, value as float64) for numeric or text input."""
    values = _plain(values)
    if _is_number_dtype(values):
        number = values.astype("float64")
        present = values.notna()
        whole = present & np.isfinite(number) & (number == np.floor(number))
        return present, whole, number
    text = _text(values)
    # Digits only: "12.5" is rejected, and so is "49.00", which is likely major units.
    digits = _matches(text, r"^[+-]?\d+$")
    # Up to 15 digits convert exactly; longer ones only need to compare as too big or small.
    exact = digits & (text.str.len().fillna(0).to_numpy() <= 16)
    converted = pc.cast(pa.array(text.where(exact).array), pa.float64()).to_numpy(zero_copy_only=False)
    overflow = np.where(text.str.startswith("-").fillna(False).to_numpy(dtype=bool), -np.inf, np.inf)
    parsed = np.where(exact, converted, np.where(digits, overflow, np.nan))
    index = values.index
    return text.notna(), pd.Series(digits, index=index), pd.Series(parsed, index=index, dtype="float64")


def _amounts(values: pd.Series, issues: _Issues) -> pd.Series:
    """Positive integer minor units as int64 (0 on rejected rows, which are dropped)."""
    present, whole, number = _integers(values)
    issues.add("amount", ~present, _MISSING)
    issues.add("amount", present & ~whole, "must be an integer number of minor units")
    issues.add("amount", whole & (number <= 0), "must be > 0")
    issues.add("amount", whole & (number > MAX_AMOUNT), f"must be <= {MAX_AMOUNT}")
    ok = whole & (number > 0) & (number <= MAX_AMOUNT)
    return number.where(ok, 0).astype("int64")


def _int_in_range(values: pd.Series, low: int, high: int, column: str, issues: _Issues) -> pd.Series:
    """Nullable Int64 within [low, high]; anything else present is a row error."""
    present, whole, number = _integers(values)
    ok = whole & (number >= low) & (number <= high)
    issues.add(column, present & ~ok, f"must be an integer from {low} to {high}")
    return number.where(ok).astype("Int64")


def _booleans(values: pd.Series, issues: _Issues) -> tuple[pd.Series, pd.Series]:
    """(value, valid) for booleans written as true/false, 1/0, yes/no or t/f."""
    values = _plain(values)
    if pd.api.types.is_bool_dtype(values.dtype):
        present = values.notna()
        issues.add("succeeded", ~present, _MISSING)
        return values.fillna(False).astype(bool), present
    word = _text(values).str.lower()
    is_true = word.isin(_TRUE_WORDS)
    valid = is_true | word.isin(_FALSE_WORDS)
    issues.add("succeeded", word.isna(), _MISSING)
    issues.add(
        "succeeded",
        word.notna() & ~valid,
        "must be a boolean (true/false, 1/0, yes/no, t/f)",
    )
    return is_true.astype(bool), valid.astype(bool)


def _codes(values: pd.Series) -> pd.Series:
    """Issuer/advice codes as upper-case text, 1-digit numbers zero-padded ("5" -> "05")."""
    return by_distinct(_text(values), _normal_codes)


def _normal_codes(text: pd.Series) -> pd.Series:
    """Upper-case codes, a float's ".0" dropped, single digits zero-padded (see ``_codes``)."""
    text = text.str.upper()
    text = text.str.replace(r"^(\d{1,2})\.0+$", r"\1", regex=True)  # "51.0" from a float
    return text.str.replace(r"^(\d)$", r"0\1", regex=True)


def _timezones(values: pd.Series, issues: _Issues) -> pd.Series:
    """IANA names in tzdata's spelling (matched case-insensitively); missing stays NaN."""
    text = _text(values)
    canonical = by_distinct(text, lambda zone: zone.str.lower().map(timezone_by_lower_name()).astype(_STR))
    issues.add("customer_timezone", text.notna() & canonical.isna(), "not an IANA time zone name")
    return canonical


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    """The raw column, or an all-missing one when an optional column is absent."""
    if name in raw.columns:
        return raw[name]
    return pd.Series(np.nan, index=raw.index, dtype=_STR)


def _typed_columns(raw: pd.DataFrame, issues: _Issues) -> dict[str, pd.Series]:
    """Parse every contract column, recording each rejected value."""
    out: dict[str, pd.Series] = {}
    for name in ("invoice_id", "customer_id", "attempt_id"):
        out[name] = _text(raw[name])
        _required(out[name], name, issues)
    out["attempted_at"] = _timestamps(raw["attempted_at"], "attempted_at", issues, required=True)
    out["amount"] = _amounts(raw["amount"], issues)
    currency = _text(raw["currency"]).str.lower()
    _required(currency, "currency", issues)
    issues.add(
        "currency",
        currency.notna() & ~currency.isin(CURRENCY_EXPONENTS.keys()),
        "not an ISO 4217 currency code",
    )
    out["currency"] = currency
    succeeded, succeeded_valid = _booleans(raw["succeeded"], issues)
    out["succeeded"] = succeeded
    # Kept as given: unknown decline codes are mapped to "other" by the features.
    decline = _text(_column(raw, "decline_code")).str.lower()
    issues.add(
        "decline_code",
        decline.isna() & succeeded_valid & ~succeeded,
        "required when succeeded is false",
    )
    out["decline_code"] = decline
    out["network_decline_code"] = _codes(_column(raw, "network_decline_code"))
    out["merchant_advice_code"] = _codes(_column(raw, "merchant_advice_code"))
    out["card_brand"] = _text(raw["card_brand"]).str.lower()
    _required(out["card_brand"], "card_brand", issues)
    out["card_funding"] = _choice(_column(raw, "card_funding"), CARD_FUNDINGS, "card_funding", issues)
    country = _text(_column(raw, "card_country")).str.upper()
    issues.add(
        "card_country",
        country.notna() & ~country.isin(COUNTRIES),
        "not an ISO 3166-1 alpha-2 country code",
    )
    out["card_country"] = country
    out["customer_timezone"] = resolve_timezones(_timezones(_column(raw, "customer_timezone"), issues), country)
    out["card_exp_month"] = _int_in_range(_column(raw, "card_exp_month"), 1, 12, "card_exp_month", issues)
    out["card_exp_year"] = _int_in_range(_column(raw, "card_exp_year"), 2000, 2100, "card_exp_year", issues)
    out["card_fingerprint"] = _text(_column(raw, "card_fingerprint"))
    out["billing_interval"] = _choice(_column(raw, "billing_interval"), BILLING_INTERVALS, "billing_interval", issues)
    out["customer_created_at"] = _timestamps(
        _column(raw, "customer_created_at"), "customer_created_at", issues, required=False
    )
    return out


# ---------------------------------------------------------------------------------------
# Cross-row rules


def _check_duplicate_attempts(attempt_id: pd.Series, issues: _Issues) -> None:
    """Flag every repeat of an attempt_id after its first occurrence, naming that row."""
    repeat = (attempt_id.duplicated(keep="first") & attempt_id.notna()).to_numpy()
    if not repeat.any():
        return
    codes, _ = pd.factorize(attempt_id)
    # factorize numbers values in order of first appearance, so this lists first rows by code.
    first_positions = np.flatnonzero(~attempt_id.duplicated(keep="first") & attempt_id.notna())
    first_rows = first_positions[codes[repeat]] + 1
    reasons = np.array([f"duplicate attempt_id (first at row {r})" for r in first_rows])
    issues.add("attempt_id", repeat, reasons)


def _reject_whole_invoices(invoice_id: pd.Series, own: np.ndarray, issues: _Issues) -> None:
    """Reject the other rows of any invoice with a bad row: a partial history misleads."""
    bad = own & invoice_id.notna().to_numpy()
    if not bad.any():
        return
    bad_positions = np.flatnonzero(bad)
    first_bad_row = pd.Series(bad_positions + 1, index=invoice_id.to_numpy()[bad_positions]).groupby(level=0).min()
    follow = ~own & invoice_id.isin(first_bad_row.index).to_numpy()
    if not follow.any():
        return
    ids = invoice_id[follow]
    reasons = "invoice " + ids + " has an invalid row " + ids.map(first_bad_row).astype(_STR)
    issues.add("invoice_id", follow, reasons.to_numpy(dtype=object))


# ---------------------------------------------------------------------------------------
# Output


def _errors_frame(raw: pd.DataFrame, issues: _Issues) -> pd.DataFrame:
    """One row per problem, ordered by data row, with the value as it was given."""
    parts = []
    for column, flags, reason in issues.found:
        positions = np.flatnonzero(flags)
        given = _column(raw, column).iloc[positions].astype(_STR).to_numpy(dtype=object)
        parts.append(pd.DataFrame({"row": positions + 1, "column": column, "value": given, "reason": reason}))
    if not parts:
        return pd.DataFrame(
            {
                "row": pd.Series(dtype="int64"),
                "column": pd.Series(dtype=_STR),
                "value": pd.Series(dtype=_STR),
                "reason": pd.Series(dtype=_STR),
            }
        )
    errors = pd.concat(parts, ignore_index=True)
    errors = errors.sort_values("row", kind="stable", ignore_index=True)
    return errors.astype({"row": "int64", "column": _STR, "value": _STR, "reason": _STR})


def _no_valid_rows_message(n: int, errors: pd.DataFrame) -> str:
    """One line naming how many rows failed and the first row's own problem."""
    own = errors[~errors["reason"].str.startswith("invoice ")]
    first = own.iloc[0] if len(own) else errors.iloc[0]
    return f"no valid rows: {n} rows rejected (first: row {first['row']}, {first['column']}: {first['reason']})"


def _assemble(typed: dict[str, pd.Series], keep: np.ndarray) -> pd.DataFrame:
    """Valid rows in contract order, sorted by invoice and time, numbered within invoice."""
    kept = np.flatnonzero(keep)
    invoice = _text_rank(typed["invoice_id"])[kept]
    at = typed["attempted_at"].dt.tz_convert(None).to_numpy()[kept].view("int64")
    # Integer keys sort several times faster than the ids as text; the ranks keep the text order.
    order = np.lexsort((at, invoice))
    same_instant = (invoice[order][1:] == invoice[order][:-1]) & (at[order][1:] == at[order][:-1])
    if same_instant.any():  # two attempts of an invoice at one instant: their attempt_ids decide
        order = np.lexsort((_text_rank(typed["attempt_id"])[kept], at, invoice))
    rows = kept[order]
    frame = pd.DataFrame({name: typed[name] for name in CONTRACT_COLUMNS})
    if len(rows) != len(frame) or (rows != np.arange(len(rows))).any():  # skip when already in order
        frame = frame.take(rows).reset_index(drop=True)
    frame["attempt_number"] = _rank_within_runs(invoice[order])
    return frame


def _text_rank(text: pd.Series) -> np.ndarray:
    """Each value's rank among the distinct values in text (code point) order; -1 where missing."""
    codes, _ = pd.factorize(text, sort=True, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64)


def _rank_within_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """1-based position of each value within its run of equal values (keys already sorted)."""
    n = len(sorted_keys)
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    position = np.arange(n, dtype=np.int64)
    run_start = np.maximum.accumulate(np.where(starts, position, 0))
    return position - run_start + 1


def _iso_utc(values: pd.Series) -> pd.Series:
    """ISO 8601 text with a +00:00 offset, as precise as the values need; NaT -> missing."""
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    array = naive.to_numpy()
    ticks = array[~np.isnat(array)].view("int64")
    unit: Literal["s", "ms", "us", "ns"] = "ns"
    steps: tuple[tuple[Literal["s", "ms", "us"], int], ...] = (("s", 10**9), ("ms", 10**6), ("us", 10**3))
    for candidate, step in steps:
        if not (ticks % step).any():
            unit = candidate
            break
    text = pd.Series(np.datetime_as_string(array, unit=unit), index=values.index, dtype=_STR)
    return (text + "+00:00").where(values.notna())
