"""Taobao display ads (Tianchi 56) as released: three files joined."""

from __future__ import annotations

import polars as pl

from adasparse_lab.data.readers.base import FileSource, Split, left_join, scan_csv
from adasparse_lab.data.sources import TimeSplit


class TaobaoRawSource(FileSource):
    """Taobao display ads (Tianchi 56): raw_sample.csv (user, time_stamp, adgroup_id, pid,
    nonclk, clk) joined with ad_feature.csv on adgroup_id and user_profile.csv on userid
    (renamed from ``user``). Users without a profile keep null profile fields, and the
    release's ``NULL`` brand is null (both: the OOV code)."""

    layout = "the Taobao release (Tianchi 56)"

    def __init__(
        self,
        root: str,
        samples: str = "raw_sample.csv",
        ads: str = "ad_feature.csv",
        users: str = "user_profile.csv",
        split: Split | None = None,
    ) -> None:
        files = {"samples": samples, "ads": ads, "users": users}
        super().__init__(root, files, split or TimeSplit(column="time_stamp"))

    def scan(self) -> pl.LazyFrame:
        samples = scan_csv(self.path("samples")).rename({"user": "userid"})
        profile = scan_csv(self.path("users")).rename(
            {"new_user_class_level ": "new_user_class_level"}, strict=False
        )
        ads = scan_csv(self.path("ads"), null_values="NULL")  # the release's missing brand
        with_ads = left_join(samples, ads, "adgroup_id")
        return left_join(with_ads, profile, "userid")
