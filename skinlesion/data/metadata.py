"""Clinical metadata (age, sex, anatomical site): validation of whole tables and the model encoding.

:class:`MetadataEncoder` turns the metadata into the model's 14 numeric inputs.
:func:`clean_metadata` validates a table's metadata columns with the rules of
:mod:`skinlesion.schema` (ISIC 2019 vocabulary, ages 0-120 capped at 85, blank = missing) and names
the 1-based row of the first bad value. Each distinct value is validated once, so a table of tens of
thousands of rows is checked in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.errors import MetadataError
from skinlesion.schema import (
    METADATA_FIELDS, SEXES, SITES, validate_age, validate_sex, validate_site)

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


def _feature_name(prefix: str, value: str) -> str:
    return f"{prefix}_" + "".join(ch if ch.isalnum() else "_" for ch in value)


class MetadataEncoder:
    """Age, sex and anatomical site as the model's metadata input: 14 float32 features.

    ``age`` standardised with the training mean and standard deviation (a missing age is imputed
    with the training mean, i.e. 0), ``age_missing`` (1 when missing), one-hot ``sex_*`` over
    male/female/missing and one-hot ``site_*`` over the 9 ISIC 2019 sites including missing. The
    fitted state is plain JSON (:meth:`get_state` / :meth:`from_state`) stored in the model card,
    so a loaded version encodes exactly as it was trained. Values outside the vocabulary raise
    :class:`MetadataError` naming the 1-based row and listing the allowed values.
    """

    #: Mean used when the training data has no age at all, and scale used when its ages do not
    #: vary: a typical dermoscopy population, so an age seen later still lands on a sensible scale.
    DEFAULT_AGE_MEAN = 50.0
    DEFAULT_AGE_SCALE = 15.0
    STATE_VERSION = 1

    def fit(self, df: pd.DataFrame) -> MetadataEncoder:
        """Learn the age mean and scale from ``df`` (validated; columns as in the dataset table)."""
        ages = clean_metadata(df)["age_approx"].dropna().to_numpy()
        spread = float(ages.std()) if ages.size else 0.0
        self._set(age_mean=float(ages.mean()) if ages.size else self.DEFAULT_AGE_MEAN,
                  age_scale=spread if spread > 0 else self.DEFAULT_AGE_SCALE,
                  sexes=list(SEXES), sites=list(SITES))
        return self

    def _set(self, *, age_mean: float, age_scale: float, sexes: list[str], sites: list[str]
             ) -> None:
        self.age_mean_, self.age_scale_ = age_mean, age_scale
        self.sexes_, self.sites_ = sexes, sites
        self.feature_names_: list[str] = [
            "age", "age_missing", *(_feature_name("sex", s) for s in sexes),
            *(_feature_name("site", s) for s in sites)]
        self.n_features_ = len(self.feature_names_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "age_mean_"):
            from sklearn.exceptions import NotFittedError  # lazy: sklearn is slow to import

            raise NotFittedError("this MetadataEncoder is not fitted; call fit() or from_state()")

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """``(len(df), n_features_)`` float32 features in :attr:`feature_names_` order."""
        self._check_fitted()
        clean = clean_metadata(df)
        age = clean["age_approx"].to_numpy(dtype=np.float64)
        missing = np.isnan(age)
        scaled = np.where(missing, 0.0, (age - self.age_mean_) / self.age_scale_)
        sex = clean["sex"].to_numpy()[:, None] == np.asarray(self.sexes_, dtype=object)[None, :]
        site = (clean["anatom_site_general"].to_numpy()[:, None]
                == np.asarray(self.sites_, dtype=object)[None, :])
        return np.column_stack([scaled, missing, sex, site]).astype(np.float32)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)

    def get_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (see :meth:`from_state`)."""
        self._check_fitted()
        return {"version": self.STATE_VERSION, "age_mean": self.age_mean_,
                "age_scale": self.age_scale_, "sexes": list(self.sexes_),
                "sites": list(self.sites_)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MetadataEncoder:
        """A fitted encoder from :meth:`get_state`'s dict (e.g. read back from a model card)."""
        if state.get("version") != cls.STATE_VERSION:
            raise ValueError(f"metadata encoder state version {state.get('version')!r} is not "
                             f"supported (expected {cls.STATE_VERSION}); retrain the model")
        if not state["age_scale"] > 0:
            raise ValueError(f"metadata encoder state has age_scale {state['age_scale']!r}; it "
                             "must be positive")
        encoder = cls()
        encoder._set(age_mean=float(state["age_mean"]), age_scale=float(state["age_scale"]),
                     sexes=[str(s) for s in state["sexes"]], sites=[str(s) for s in state["sites"]])
        return encoder
