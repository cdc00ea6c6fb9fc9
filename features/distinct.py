"""Work on a column once per distinct value: codes, zones, countries and currencies take a few
hundred values over a million rows, so their lookups and regexes run on those only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def by_distinct(values: pd.Series, transform: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """An elementwise, vectorised `transform` of a column, run on its distinct values and broadcast back.

    The column is factorized as stored (a pandas string column by Arrow's hashing); missing values
    stay missing, whatever `transform` would make of them. Aligned to `values`.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = transform(pd.Series(uniques, dtype=values.dtype))
    return pd.Series(mapped.array.take(np.asarray(codes), allow_fill=True), index=values.index)
