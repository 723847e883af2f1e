"""Issue 22: one owner for each piece of a study's shared work (store/claims.py). Real
processes race for a claim in a real storage; a claim's holder dies, fails or finishes."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection

from adasparse_lab.errors import ConfigError
from adasparse_lab.store import claims as claims_mod
from adasparse_lab.store.claims import Claims, claim_name, is_claim
from adasparse_lab.store.reader import load_study
from adasparse_lab.store.study_storage import worker_id


def _storage(kind: str, tmp_path):
    if kind == "journal":
        return JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    return RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")


def _race(kind: str, folder: str, key: str, start, out) -> None:
    from pathlib import Path

    storage = _storage(kind, Path(folder))
    start.wait()
    claim = Claims(storage, "s", worker_id()).take(key)
    out.put(claim is not None)
    if claim is not None:
        claim.finish()


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_of_eight_processes_racing_for_a_claim_exactly_one_wins(kind, tmp_path):
    _storage(kind, tmp_path)  # the schema, made once
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(kind, str(tmp_path), "reeval:3:1", start, out))
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    start.set()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert sum(won) == 1
    assert Claims(_storage(kind, tmp_path), "s", worker_id()).state("reeval:3:1") == "done"


def test_a_done_claim_is_never_taken_again_and_a_failed_one_is_taken_once(tmp_path):
    storage = _storage("sqlite", tmp_path)
    me = Claims(storage, "s", worker_id())
    first = me.take("reference:0")
    assert first is not None and me.take("reference:0") is None  # held by a live worker
    first.finish(ok=False)
    assert me.state("reference:0") == "failed"
    second = me.take("reference:0")  # the failed run is run again, by one worker
    assert second is not None and me.take("reference:0") is None
    second.finish()
    assert me.take("reference:0") is None and me.state("reference:0") == "done"
    assert optuna.get_all_study_names(storage) == [
        claim_name("s", "reference:0", 0),
        claim_name("s", "reference:0", 1),
    ]


def _dead_worker() -> str:
    """The identity of a worker on this host that has exited."""
    code = "from adasparse_lab.store.study_storage import worker_id; print(worker_id())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_claim_whose_holder_died_is_taken_over_by_one_worker(tmp_path):
    storage = _storage("sqlite", tmp_path)
    assert Claims(storage, "s", _dead_worker()).take("model:4") is not None  # never finished
    live = Claims(storage, "s", worker_id())
    assert live.state("model:4") == "held"
    taken = live.take("model:4")
    assert taken is not None
    assert Claims(storage, "s", "other-host:1:1").take("model:4") is None  # now held by us


def test_work_redone_at_each_end_is_done_by_one_live_worker_at_a_time(tmp_path):
    storage = _storage("sqlite", tmp_path)
    dead_end = Claims(storage, "s", _dead_worker()).take("end", again_when_done=True)
    dead_end.finish()  # an earlier run of the study's command ended it, and exited
    live = Claims(storage, "s", worker_id())
    end = live.take("end", again_when_done=True)
    assert end is not None  # a later run ends it anew
    assert Claims(storage, "s", "other:1:1").take("end", again_when_done=True) is None  # while held
    end.finish()
    # done by a worker known to be alive (this one): a worker ending at the same time skips it
    assert Claims(storage, "s", "other:1:1").take("end", again_when_done=True) is None


def test_a_claim_made_but_never_named_is_taken_over_after_a_while(tmp_path, monkeypatch):
    storage = _storage("sqlite", tmp_path)
    # A creator killed between creating its claim and naming itself leaves this behind.
    storage.create_new_study([StudyDirection.MINIMIZE], claim_name("s", "reeval:1:2", 0))
    monkeypatch.setattr(claims_mod, "UNNAMED_S", 0.5)
    taken = Claims(storage, "s", worker_id()).take("reeval:1:2")
    assert taken is not None


def test_a_slow_creator_yields_to_a_worker_that_took_its_claim_over(tmp_path):
    """A creator that names itself after another worker took its unnamed claim over (the next
    generation exists) gives its own claim up: never two owners."""
    storage = _storage("sqlite", tmp_path)
    newer = storage.create_new_study([StudyDirection.MINIMIZE], claim_name("s", "k", 1))
    storage.set_study_user_attr(newer, claims_mod.WORKER, "other-host:2:2")
    assert Claims(storage, "s", worker_id()).take("k") is None  # made #0, found #1, yielded
    mine = storage.get_study_id_from_name(claim_name("s", "k", 0))
    assert storage.get_study_user_attrs(mine)[claims_mod.STATE] == "failed"


def test_claims_are_not_listed_as_studies(tmp_path):
    storage = _storage("sqlite", tmp_path)
    optuna.create_study(study_name="real", storage=storage)
    Claims(storage, "real", worker_id()).take("end")
    assert is_claim(claim_name("real", "end", 0)) and not is_claim("real")
    with pytest.raises(ConfigError) as err:
        load_study("missing", storage, tmp_path)
    assert "real" in str(err.value) and "[claim]" not in str(err.value)


def _open_sqlite(folder: str, start, out) -> None:
    from pathlib import Path

    from adasparse_lab.store.study_storage import open_storage

    start.wait()
    try:
        open_storage("sqlite", "s", Path(folder), workers=1)
        out.put("ok")
    except Exception as err:  # reported to the test, which names it
        out.put(f"{type(err).__name__}: {str(err)[:200]}")


def test_processes_opening_a_new_sqlite_study_at_once_all_get_it(tmp_path):
    """A reader (the report, a test's poll) opening a study's SQLite file while its worker
    creates Optuna's schema made one of them fail: 'table studies already exists'."""
    ctx = mp.get_context("spawn")
    for round_ in range(3):  # a fresh file each round: the race is at creation
        folder = tmp_path / f"r{round_}"
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open_sqlite, args=(str(folder), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        assert results == ["ok"] * len(procs), results
