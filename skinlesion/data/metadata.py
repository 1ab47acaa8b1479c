"""Clinical metadata (age, sex, anatomical site): validation of whole tables and the model encoding.

:func:`clean_metadata` validates a table's metadata columns with the rules of
:mod:`skinlesion.schema` (ISIC 2019 vocabulary, ages 0-120 capped at 85, blank = missing) and names
the 1-based row of the first bad value. Each distinct value is validated once, so a table of tens of
thousands of rows is checked in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from skinlesion.errors import MetadataError
from skinlesion.schema import METADATA_FIELDS, validate_age, validate_sex, validate_site

_VALIDATORS: dict[str, Callable[[object], object]] = {
    "age_approx": validate_age, "sex": validate_sex, "anatom_site_general": validate_site}


def relocate(err: MetadataError, *, source: str | None, row: int | None,
             field: str | None = None) -> MetadataError:
    """``err`` (raised by a schema validator, which knows only the field) with the file, the row and
    optionally another field name (the column's name in that file)."""
    bare = str(err).removeprefix(f"field '{err.field}': ") if err.field else str(err)
    return MetadataError(bare, source=source, row=row, field=field or err.field)


def clean_column(values: pd.Series, field: str, *, source: str | None = None,
                 column: str | None = None) -> np.ndarray:
    """Validate one metadata column (``field`` in METADATA_FIELDS) of raw values.

    Returns floats (NaN = missing) for ``age_approx``, strings (``"missing"`` for blanks) otherwise.
    Raises :class:`MetadataError` naming ``source``, the 1-based row and the field (``column``: its
    name in the file, when that is not ``field``) at the first bad value."""
    validator = _VALIDATORS[field]
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    cleaned: list[object] = []
    for k, raw in enumerate([*uniques, None]):  # NaN cells have code -1: the trailing None
        try:
            cleaned.append(validator(raw))
        except MetadataError as err:
            first = int(np.flatnonzero(codes == (k if k < len(uniques) else -1))[0])
            raise relocate(err, source=source, row=first + 1, field=column) from None
    if field == "age_approx":
        table = np.array([np.nan if v is None else v for v in cleaned], dtype=np.float64)
    else:
        table = np.array(cleaned, dtype=object)
    return table[codes]


def clean_metadata(table: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """The validated ``age_approx`` (float, NaN = missing), ``sex`` and ``anatom_site_general``
    (``"missing"`` for blanks) of ``table``, on its index.

    A missing column or a value outside the vocabulary raises :class:`MetadataError` naming
    ``source`` (the file), the 1-based row and the field, with the allowed values."""
    absent = [f for f in METADATA_FIELDS if f not in table.columns]
    if absent:
        raise MetadataError(f"missing column(s) {', '.join(absent)}; metadata needs "
                            f"{', '.join(METADATA_FIELDS)} (leave a cell empty when unknown)",
                            source=source, field=absent[0])
    return pd.DataFrame({f: clean_column(table[f], f, source=source) for f in METADATA_FIELDS},
                        index=table.index)
