"""Currency reference data: ISO 4217 minor-unit exponents and rough USD rates.

Amounts in the attempts dataset are integers in minor units (cents, yen, fils...). To compare
them across currencies, a feature needs the currency's exponent and an approximate rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# ISO 4217 "List one" (current currency & funds), lower case -> minor unit exponent, i.e. the
# number of decimal places of the minor unit (ISO 4217 amendment list as of 2025-2026).
# Precious metals, SDR and test codes (XAU, XDR, XTS, XXX, ...) have no minor unit ("N.A.")
# and are not chargeable, so they are left out. A few codes that ISO withdrew recently are kept
# (marked "withdrawn") because historical attempts may still carry them.
# Note: processors may differ from ISO for a few currencies (Stripe, for example, takes ISK
# and UGX amounts with two decimals for backwards compatibility); this table is ISO's.
CURRENCY_EXPONENTS: dict[str, int] = {
    "aed": 2,
    "afn": 2,
    "all": 2,
    "amd": 2,
    "ang": 2,  # withdrawn 2025, replaced by xcg
    "aoa": 2,
    "ars": 2,
    "aud": 2,
    "awg": 2,
    "azn": 2,
    "bam": 2,
    "bbd": 2,
    "bdt": 2,
    "bgn": 2,  # replaced by the euro on 2026-01-01
    "bhd": 3,
    "bif": 0,
    "bmd": 2,
    "bnd": 2,
    "bob": 2,
    "bov": 2,
    "brl": 2,
    "bsd": 2,
    "btn": 2,
    "bwp": 2,
    "byn": 2,
    "bzd": 2,
    "cad": 2,
    "cdf": 2,
    "che": 2,
    "chf": 2,
    "chw": 2,
    "clf": 4,
    "clp": 0,
    "cny": 2,
    "cop": 2,
    "cou": 2,
    "crc": 2,
    "cuc": 2,  # withdrawn
    "cup": 2,
    "cve": 2,
    "czk": 2,
    "djf": 0,
    "dkk": 2,
    "dop": 2,
    "dzd": 2,
    "egp": 2,
    "ern": 2,
    "etb": 2,
    "eur": 2,
    "fjd": 2,
    "fkp": 2,
    "gbp": 2,
    "gel": 2,
    "ghs": 2,
    "gip": 2,
    "gmd": 2,
    "gnf": 0,
    "gtq": 2,
    "gyd": 2,
    "hkd": 2,
    "hnl": 2,
    "hrk": 2,  # withdrawn 2023, replaced by the euro
    "htg": 2,
    "huf": 2,
    "idr": 2,
    "ils": 2,
    "inr": 2,
    "iqd": 3,
    "irr": 2,
    "isk": 0,
    "jmd": 2,
    "jod": 3,
    "jpy": 0,
    "kes": 2,
    "kgs": 2,
    "khr": 2,
    "kmf": 0,
    "kpw": 2,
    "krw": 0,
    "kwd": 3,
    "kyd": 2,
    "kzt": 2,
    "lak": 2,
    "lbp": 2,
    "lkr": 2,
    "lrd": 2,
    "lsl": 2,
    "lyd": 3,
    "mad": 2,
    "mdl": 2,
    "mga": 2,
    "mkd": 2,
    "mmk": 2,
    "mnt": 2,
    "mop": 2,
    "mru": 2,
    "mur": 2,
    "mvr": 2,
    "mwk": 2,
    "mxn": 2,
    "mxv": 2,
    "myr": 2,
    "mzn": 2,
    "nad": 2,
    "ngn": 2,
    "nio": 2,
    "nok": 2,
    "npr": 2,
    "nzd": 2,
    "omr": 3,
    "pab": 2,
    "pen": 2,
    "pgk": 2,
    "php": 2,
    "pkr": 2,
    "pln": 2,
    "pyg": 0,
    "qar": 2,
    "ron": 2,
    "rsd": 2,
    "rub": 2,
    "rwf": 0,
    "sar": 2,
    "sbd": 2,
    "scr": 2,
    "sdg": 2,
    "sek": 2,
    "sgd": 2,
    "shp": 2,
    "sle": 2,
    "sll": 2,  # withdrawn 2023, replaced by sle
    "sos": 2,
    "srd": 2,
    "ssp": 2,
    "stn": 2,
    "svc": 2,
    "syp": 2,
    "szl": 2,
    "thb": 2,
    "tjs": 2,
    "tmt": 2,
    "tnd": 3,
    "top": 2,
    "try": 2,
    "ttd": 2,
    "twd": 2,
    "tzs": 2,
    "uah": 2,
    "ugx": 0,
    "usd": 2,
    "usn": 2,
    "uyi": 0,
    "uyu": 2,
    "uyw": 4,
    "uzs": 2,
    "ved": 2,
    "ves": 2,
    "vnd": 0,
    "vuv": 0,
    "wst": 2,
    "xaf": 0,
    "xcd": 2,
    "xcg": 2,
    "xof": 0,
    "xpf": 0,
    "yer": 2,
    "zar": 2,
    "zmw": 2,
    "zwg": 2,
    "zwl": 2,  # withdrawn 2024, replaced by zwg
}

# Approximate USD value of one major unit, for the most used card currencies. Only to put
# amounts of different currencies on one scale for a feature: never for accounting.
# Source: approximate mid-market rates of mid-2026, rounded to 2-3 significant figures; GBP,
# AUD, CAD, CNY, BRL and CZK from the ECB euro reference rates of 2026-06-11 (converted to
# USD), the others the author's approximations for 2025-2026 that may be off by ~10%.
# Fast-moving currencies (ARS, TRY, NGN, EGP) drift quickly: refresh them before relying on
# absolute levels. Pegged ones (AED, SAR, HKD, DKK, BGN) are stable.
USD_PER_UNIT: dict[str, float] = {
    "usd": 1.0,
    "eur": 1.16,
    "gbp": 1.34,
    "jpy": 0.0067,
    "cad": 0.715,
    "aud": 0.70,
    "chf": 1.25,
    "cny": 0.1475,
    "hkd": 0.128,
    "sgd": 0.78,
    "nzd": 0.58,
    "sek": 0.105,
    "nok": 0.099,
    "dkk": 0.155,
    "pln": 0.27,
    "czk": 0.0477,
    "huf": 0.0029,
    "ron": 0.23,
    "bgn": 0.593,
    "try": 0.024,
    "ils": 0.29,
    "aed": 0.2723,
    "sar": 0.2667,
    "inr": 0.0115,
    "krw": 0.00071,
    "twd": 0.033,
    "thb": 0.030,
    "myr": 0.235,
    "idr": 0.000061,
    "php": 0.0175,
    "mxn": 0.054,
    "brl": 0.194,
    "cop": 0.00025,
    "clp": 0.00105,
    "pen": 0.28,
    "ars": 0.00080,
    "zar": 0.056,
    "ngn": 0.00065,
    "egp": 0.020,
    "kes": 0.0077,
}


def amount_usd(amount_minor: pd.Series, currency: pd.Series) -> pd.Series:
    """Approximate USD value of minor-unit amounts; NaN where the currency has no rate."""
    # A handful of distinct currencies: look each one up once (codes -1 where missing).
    codes, uniques = pd.factorize(currency.astype("str"), use_na_sentinel=True)
    code = pd.Index(uniques, dtype="str").str.strip().str.lower()
    exponent = _per_row(code.map(CURRENCY_EXPONENTS), codes, currency.index)
    rate = _per_row(code.map(USD_PER_UNIT), codes, currency.index)
    amount = pd.to_numeric(amount_minor, errors="coerce").astype("float64")
    return (amount / np.power(10.0, exponent) * rate).rename("amount_usd")


def _per_row(values: pd.Index, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """The float value of each row's distinct code (`values[code]`), NaN where the code is -1."""
    table = np.append(np.asarray(values, dtype=np.float64), np.nan)
    return pd.Series(table[codes], index=index, dtype="float64")
