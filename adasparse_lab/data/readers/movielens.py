"""MovieLens-1M: ratings joined with users and movies; the domain is a user attribute."""

from __future__ import annotations

import polars as pl

from adasparse_lab.data.readers.base import FileSource, Split, left_join
from adasparse_lab.data.sources import RandomSplit
from adasparse_lab.errors import ConfigError

_ML_COLUMNS = {
    "ratings": ["user_id", "movie_id", "rating", "timestamp"],
    "users": ["user_id", "gender", "age", "occupation", "zip"],
    "movies": ["movie_id", "title", "genres"],
}
_ML_INTS = {"user_id", "movie_id", "rating", "timestamp", "age", "occupation"}


class MovieLens1MSource(FileSource):
    """MovieLens-1M (``::``-separated ratings.dat, users.dat, movies.dat; latin-1 titles).
    Ratings are joined with users and movies; ``label`` = rating >= ``min_positive_rating``;
    ``domain`` = the user attribute ``domain_attribute`` (gender, age or occupation);
    ``genre`` = the first listed genre."""

    layout = "the unzipped ml-1m/ folder"

    def __init__(
        self,
        root: str,
        domain_attribute: str = "gender",
        min_positive_rating: int = 4,
        ratings: str = "ratings.dat",
        users: str = "users.dat",
        movies: str = "movies.dat",
        split: Split | None = None,
    ) -> None:
        if domain_attribute not in ("gender", "age", "occupation"):
            raise ConfigError(
                f"data.source.domain_attribute={domain_attribute!r}: use gender, age or occupation"
            )
        if not 1 <= min_positive_rating <= 5:
            raise ConfigError(f"data.source.min_positive_rating={min_positive_rating}: use 1..5")
        self.domain_attribute, self.min_positive_rating = domain_attribute, min_positive_rating
        files = {"ratings": ratings, "users": users, "movies": movies}
        super().__init__(root, files, split or RandomSplit())

    def options(self) -> dict:
        return {"domain": self.domain_attribute, "min_positive": self.min_positive_rating}

    def _dat(self, key: str) -> pl.LazyFrame:
        names = _ML_COLUMNS[key]
        if key == "movies":  # latin-1 titles, which polars cannot decode; a small file
            text = self.path(key).read_bytes().decode("latin-1")
            lines = pl.LazyFrame({"line": text.splitlines()})
        else:
            lines = pl.scan_csv(
                self.path(key),
                has_header=False,
                separator="\x1f",  # never in the files: one column a line, split on '::' below
                quote_char=None,
                new_columns=["line"],
                infer_schema=False,
            )
        parts = pl.col("line").str.split_exact("::", len(names) - 1)
        fields = parts.struct.rename_fields(names)
        out = lines.select(fields.alias("f")).unnest("f")
        return out.with_columns(pl.col(c).cast(pl.Int64) for c in names if c in _ML_INTS)

    def scan(self) -> pl.LazyFrame:
        with_users = left_join(self._dat("ratings"), self._dat("users"), "user_id")
        joined = left_join(with_users, self._dat("movies"), "movie_id")
        return joined.with_columns(
            label=(pl.col("rating") >= self.min_positive_rating).cast(pl.Int8),
            domain=pl.col(self.domain_attribute).cast(pl.String),
            genre=pl.col("genres").str.split("|").list.first(),
        )
