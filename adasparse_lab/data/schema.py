"""The feature schema: which column is what. It comes from config, never from guessing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from adasparse_lab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schema:
    """Names the columns of a multi-domain CTR table.

    label: the 0/1 click column.
    domain: the column whose values are the domains (metrics are reported per value).
    categorical: categorical feature columns (the domain column is added if missing).
    dense: numeric feature columns.
    domain_features: the domain-aware features x^d (default: just the domain column);
        every one must also be categorical. The rest are the domain-agnostic x^a.
    user: optional user-id column, used for GAUC.
    """

    label: str
    domain: str
    categorical: tuple[str, ...]
    dense: tuple[str, ...] = ()
    domain_features: tuple[str, ...] = ()
    user: str | None = None
    extra: tuple[str, ...] = field(default=())  # kept through preparation, not a feature

    def __post_init__(self) -> None:
        cats = tuple(self.categorical)
        if self.domain not in cats:
            cats = (self.domain, *cats)
        object.__setattr__(self, "categorical", cats)
        object.__setattr__(self, "dense", tuple(self.dense))
        object.__setattr__(self, "extra", tuple(self.extra))
        dfeat = tuple(self.domain_features) or (self.domain,)
        object.__setattr__(self, "domain_features", dfeat)
        unknown = [c for c in dfeat if c not in cats]
        if unknown:
            raise ConfigError(
                f"data.schema.domain_features: {unknown} are not categorical features "
                f"(categorical: {list(cats)})"
            )
        both = set(cats) & set(self.dense)
        if both:
            raise ConfigError(f"data.schema: columns {sorted(both)} are both categorical and dense")
        if self.label in cats or self.label in self.dense:
            raise ConfigError(f"data.schema.label {self.label!r} is also listed as a feature")

    @classmethod
    def from_config(
        cls,
        label: str,
        domain: str,
        categorical: Sequence[str],
        dense: Sequence[str] = (),
        domain_features: Sequence[str] = (),
        user: str | None = None,
        extra: Sequence[str] = (),
    ) -> Schema:
        return cls(
            label=label,
            domain=domain,
            categorical=tuple(categorical),
            dense=tuple(dense),
            domain_features=tuple(domain_features),
            user=user,
            extra=tuple(extra),
        )

    @property
    def agnostic_features(self) -> tuple[str, ...]:
        return tuple(c for c in self.categorical if c not in self.domain_features)

    @property
    def required_columns(self) -> list[str]:
        cols = [self.label, *self.categorical, *self.dense, *self.extra]
        if self.user is not None and self.user not in cols:
            cols.append(self.user)
        return cols

    def validate(self, frame: pl.DataFrame, source: str) -> None:
        """Fail with a message naming the column and the file when the table is unusable."""
        if frame.height == 0:
            raise DataError(f"{source}: no rows")
        missing = [c for c in self.required_columns if c not in frame.columns]
        if missing:
            hint = " (one column: is data.source.separator right?)" if frame.width == 1 else ""
            raise DataError(
                f"{source}: missing column(s) {missing}; the file has {frame.columns}{hint}"
            )
        _check_label(frame.get_column(self.label), source)
        nulls = frame.get_column(self.domain).null_count()
        if nulls:
            raise DataError(
                f"{source}: domain column {self.domain!r} has {nulls} nulls (every row needs one)"
            )
        for col in self.dense:
            _check_dense(frame.get_column(col), source)
        for col in self.categorical:
            _check_categorical(frame.get_column(col), source)


def _check_label(labels: pl.Series, source: str) -> None:
    if labels.null_count():
        raise DataError(f"{source}: label column {labels.name!r} has {labels.null_count()} nulls")
    # A value that is no number ('yes') casts to null: it is bad too, not dropped.
    ok = labels.cast(pl.Float64, strict=False).is_in([0.0, 1.0]).fill_null(False)
    bad = labels.filter(~ok)
    if bad.len():
        raise DataError(
            f"{source}: label column {labels.name!r} must hold only 0 and 1; "
            f"found {bad.len()} other rows, e.g. {bad.unique().sort().head(5).to_list()}"
        )


def _check_dense(values: pl.Series, source: str) -> None:
    """Numeric, finite; missing values (null, NaN) are allowed but said: they become the
    train mean."""
    name = values.name
    if values.null_count() == values.len():  # an all-empty CSV column is read as String
        raise DataError(f"{source}: dense column {name!r} has no values")
    if not values.dtype.is_numeric():
        raise DataError(f"{source}: dense column {name!r} is {values.dtype}, not numeric")
    x = values.cast(pl.Float64)
    n_inf = int(x.is_infinite().sum())
    if n_inf:
        raise DataError(
            f"{source}: dense column {name!r} has {n_inf} infinite value(s); replace or clip them"
        )
    n_missing = x.null_count() + int(x.is_nan().sum())
    if n_missing == x.len():
        raise DataError(f"{source}: dense column {name!r} has no values (all NaN)")
    if n_missing:
        log.warning(
            "%s: dense column %r has %d missing or NaN value(s); they are set to the train mean",
            source,
            name,
            n_missing,
        )


def _check_categorical(values: pl.Series, source: str) -> None:
    """Categories are labels or integer codes; a float with a fraction is a measurement."""
    if not values.dtype.is_float():
        return
    x = values.drop_nulls().drop_nans()  # missing: the OOV code, like a null
    bad = x.filter(~x.is_finite() | (x != x.floor()))
    if bad.len():
        raise DataError(
            f"{source}: categorical column {values.name!r} holds non-integer numbers "
            f"(e.g. {bad.unique().sort().head(3).to_list()}); list a measurement under "
            "data.schema.dense, or bucket it into integer codes first"
        )
