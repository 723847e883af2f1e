"""Releases someone already processed into ready CSVs with a domain column: split files
(Ali-CCP as processed by torch-rechub, Taobao as processed by FuxiCTR) or one file (Douban as
processed by Scenario-Wise-Rec)."""

from __future__ import annotations

import polars as pl

from adasparse_lab.data.readers.base import FileSource, FileSplit, Split, scan_csv, tagged


class SplitFilesSource(FileSource):
    """A release shipped as ready train/(val/)test CSVs with a domain column (Ali-CCP as
    processed by torch-rechub, Taobao as processed by FuxiCTR, ...). Without ``val`` the
    splitter (FileSplit) carves it out of train."""

    def __init__(
        self,
        root: str,
        train: str,
        test: str,
        val: str | None = None,
        split: Split | None = None,
        separator: str = ",",
    ) -> None:
        files = {"train": train, "test": test} | ({"val": val} if val else {})
        super().__init__(root, files, split or FileSplit(val=0.0 if val else 0.1))
        self.separator = separator

    def options(self) -> dict:
        return {"separator": self.separator}

    def scan(self) -> pl.LazyFrame:
        parts = [tagged(scan_csv(self.path(k), separator=self.separator), k) for k in self.files]
        return pl.concat(parts, how="diagonal_relaxed")


class SingleFileSource(FileSource):
    """One CSV holding every row and its domain (Douban as processed by Scenario-Wise-Rec)."""

    def __init__(self, root: str, file: str, split: Split, separator: str = ",") -> None:
        super().__init__(root, {"file": file}, split)
        self.separator = separator

    def options(self) -> dict:
        return {"separator": self.separator}

    def scan(self) -> pl.LazyFrame:
        return scan_csv(self.path("file"), separator=self.separator)
