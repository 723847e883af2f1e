"""The feature schema: which column is what. It comes from config, never from guessing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from adasparse_lab.errors import ConfigError, DataError


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
        missing = [c for c in self.required_columns if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: missing column(s) {missing}; the file has {frame.columns}")
        labels = frame.get_column(self.label)
        if labels.null_count():
            raise DataError(
                f"{source}: label column {self.label!r} has {labels.null_count()} nulls"
            )
        bad = frame.filter(~pl.col(self.label).cast(pl.Float64, strict=False).is_in([0.0, 1.0]))
        if bad.height:
            examples = bad.get_column(self.label).unique().head(5).to_list()
            raise DataError(
                f"{source}: label column {self.label!r} must hold only 0 and 1; "
                f"found {bad.height} other rows, e.g. {examples}"
            )
        for col in self.dense:
            if not frame.schema[col].is_numeric():
                raise DataError(
                    f"{source}: dense column {col!r} is {frame.schema[col]}, not numeric"
                )
