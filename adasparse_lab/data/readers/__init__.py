"""Readers of public multi-domain CTR releases, in the layout people download them.

Every reader is a data source (``data.source._target_``) with three methods:

- ``scan() -> pl.LazyFrame``: the whole raw table as one lazy query (CSV scans, joins across
  files, renames, the derived domain column), with the columns the schema names. When the
  release fixes the split by file (train/test files), the frame also has a ``source_split``
  column ("train", "val" or "test"), which the splitter reads and drops.
- ``load() -> RawData``: ``scan()`` collected and split (in memory).
- ``describe() -> dict``: every input file by path, size and modification time, the reader's
  options (domain rule, label rule, file names) and the split: the preparation cache key, so a
  changed file or option never reuses a stale cache.

File names are relative to ``root`` (``data.source.root``, by default under ``paths.data``).
A missing root or file is a DataError naming the key and the files expected there.
See docs/datasets.md for where each release comes from and how its domains are defined.

One module per release family (``aliccp``, ``aliexpress``, ``taobao``, ``kuairand``,
``movielens``; ``processed`` for releases someone already processed into ready files, Douban's
among them), their shared base in ``base``. The readers are re-exported here, so a stored
config's ``_target_: adasparse_lab.data.readers.<Reader>`` still resolves.
"""

from adasparse_lab.data.readers.aliccp import AliCCPRawSource
from adasparse_lab.data.readers.aliexpress import AliExpressRawSource, AliExpressSource
from adasparse_lab.data.readers.base import FileSource, FileSplit
from adasparse_lab.data.readers.kuairand import KuaiRandSource
from adasparse_lab.data.readers.movielens import MovieLens1MSource
from adasparse_lab.data.readers.processed import SingleFileSource, SplitFilesSource
from adasparse_lab.data.readers.taobao import TaobaoRawSource

__all__ = [
    "AliCCPRawSource",
    "AliExpressRawSource",
    "AliExpressSource",
    "FileSource",
    "FileSplit",
    "KuaiRandSource",
    "MovieLens1MSource",
    "SingleFileSource",
    "SplitFilesSource",
    "TaobaoRawSource",
]
