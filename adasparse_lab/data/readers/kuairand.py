"""KuaiRand (-Pure or -1K): the standard logs joined with the user and video features."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from adasparse_lab.data.readers.base import FileSource, Split, left_join, scan_csv
from adasparse_lab.data.sources import TimeSplit
from adasparse_lab.errors import ConfigError


class KuaiRandSource(FileSource):
    """KuaiRand-Pure or -1K: the standard logs concatenated, joined with the user features on
    user_id and the basic video features on video_id; the domain is ``tab`` (the app page)."""

    layout = "the KuaiRand data/ folder"

    def __init__(
        self,
        root: str,
        logs: Sequence[str],
        users: str,
        videos: str,
        split: Split | None = None,
    ) -> None:
        self.logs = list(logs)
        if not self.logs:
            raise ConfigError("data.source.logs is empty: name the log_standard_*.csv files")
        files = {f"logs[{i}]": p for i, p in enumerate(self.logs)}
        files |= {"users": users, "videos": videos}
        super().__init__(root, files, split or TimeSplit(column="time_ms"))

    def scan(self) -> pl.LazyFrame:
        logs = pl.concat(
            [scan_csv(self.path(f"logs[{i}]")) for i in range(len(self.logs))],
            how="diagonal_relaxed",
        )
        users = scan_csv(self.path("users"))
        videos = scan_csv(self.path("videos"))
        return left_join(left_join(logs, users, "user_id"), videos, "video_id")
