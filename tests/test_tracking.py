"""Tracking when several workers share one MLflow experiment: tagging the experiment's kind is
a check-then-insert on the server, so two workers starting together can both insert; the one
that loses that race (a unique-key violation, as CI saw on PostgreSQL) must go on, and any other
failure must still surface."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from adasparse_lab.store.tracking import EXPERIMENT_KIND, Tracker, tag_experiment_kind

DUPLICATE = (
    "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique "
    'constraint "experiment_tag_pk"'
)


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), "race")


def test_a_worker_that_loses_the_tag_race_goes_on(tracker):
    other_worker = MlflowClient(tracker.uri)

    def lose_the_race(experiment_id, key, value):
        other_worker.set_experiment_tag(experiment_id, key, value)  # commits first
        raise MlflowException(DUPLICATE)

    tracker.client.set_experiment_tag = lose_the_race
    tag_experiment_kind(tracker)
    tags = other_worker.get_experiment(tracker.experiment_id).tags
    assert EXPERIMENT_KIND.items() <= tags.items()


def test_a_tag_already_there_is_not_written_again(tracker):
    tag_experiment_kind(tracker)  # the first worker

    def must_not_write(*_):
        raise AssertionError("the tag was there; a second insert is what races")

    tracker.client.set_experiment_tag = must_not_write
    tag_experiment_kind(tracker)  # the second worker


def test_a_failure_that_is_not_a_lost_race_still_raises(tracker):
    def fail(*_):
        raise MlflowException("the tracking server is down")

    tracker.client.set_experiment_tag = fail
    with pytest.raises(MlflowException, match="server is down"):
        tag_experiment_kind(tracker)
