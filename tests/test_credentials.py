"""No credential is ever written (issue 22): a password in ``study.storage`` or ``tracking.uri``
is used to connect and nowhere else. The redaction rule (adasparse_lab.config.redact_url) on
its own, the copy of Hydra's saved config, and a whole study on PostgreSQL and the MLflow
server whose every written byte is searched for the password."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from adasparse_lab.config import (
    REDACTED,
    RedactUrls,
    SaveRedactedConfig,
    redact_text,
    redact_url,
    redacted,
)
from adasparse_lab.errors import StoreError
from tests.conftest import CONF, TINY_RUN
from tests.services import http_status, unavailable

SECRET = "Pw7xQz9Secret"  # 12+ characters: MLflow's basic-auth refuses shorter
USER = "alice"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"postgresql+psycopg2://alice:{SECRET}@db.example:5432/optuna",
            "postgresql+psycopg2://alice:***@db.example:5432/optuna",
        ),
        (f"http://bob:{SECRET}@10.0.0.2:5000", "http://bob:***@10.0.0.2:5000"),
        (f"https://:{SECRET}@host/path?x=1", "https://:***@host/path?x=1"),
        (f"postgresql://u:p%40{SECRET}@h/db", "postgresql://u:***@h/db"),  # an encoded '@'
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require", None),
        ("postgresql+psycopg2://adasparse@127.0.0.1:5432/optuna", "unchanged"),
        ("sqlite:////tmp/studies/mlflow.db", "unchanged"),
        ("http://127.0.0.1:5000", "unchanged"),
        ("journal", "unchanged"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url, expected):
    out = redact_url(url)
    assert SECRET not in out
    if expected == "unchanged":
        assert out == url
    elif expected is not None:
        assert out == expected
    else:  # a password in the query (libpq's password=...)
        assert out == f"postgresql://u@h/db?password={REDACTED}&sslmode=require"


def test_redact_text_finds_urls_inside_lines():
    line = (
        f"study.storage=postgresql://alice:{SECRET}@db/optuna and "
        f"'tracking.uri=http://bob:{SECRET}@m:5000'"
    )
    out = redact_text(line)
    assert SECRET not in out
    assert "postgresql://alice:***@db/optuna" in out and "http://bob:***@m:5000'" in out


def test_redacted_config_hides_every_url_and_keeps_the_original():
    cfg = OmegaConf.create(
        {
            "study": {"storage": f"postgresql://alice:{SECRET}@db/optuna", "n_trials": 3},
            "tracking": {"uri": f"http://bob:{SECRET}@m:5000", "enabled": True},
            "paths": {"studies": "${study.storage}"},  # an interpolation resolves redacted too
            "list": [f"http://x:{SECRET}@h", 1],
        }
    )
    safe = redacted(cfg)
    assert SECRET not in OmegaConf.to_yaml(safe, resolve=True)
    assert safe.study.storage == "postgresql://alice:***@db/optuna"
    assert safe.study.n_trials == 3 and safe.tracking.enabled is True
    assert cfg.study.storage.endswith(f"{SECRET}@db/optuna")  # the live config still connects


def test_hydra_saves_no_copy_of_its_own():
    """The root config turns Hydra's own .hydra/ copy off and writes it through the callback."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.output_subdir is None
    targets = [c._target_ for c in cfg.hydra.callbacks.values()]
    assert targets == ["adasparse_lab.config.SaveRedactedConfig"]


def test_hydra_saved_config_is_redacted(tmp_path):
    """The callback writes the three files Hydra would (config, hydra, overrides), each URL's
    password redacted and nothing else changed."""
    url = f"postgresql://alice:{SECRET}@db/optuna"
    config = OmegaConf.create(
        {
            "study": {"storage": url},
            "hydra": {
                "runtime": {"output_dir": str(tmp_path)},
                "overrides": {"task": [f"study.storage={url}", "seed=1"]},
                "job": {"override_dirname": f"seed=1,study.storage={url}"},
            },
        }
    )
    SaveRedactedConfig().on_job_start(config, task_function=None)
    saved = sorted(p.name for p in (tmp_path / ".hydra").iterdir())
    assert saved == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    for path in (tmp_path / ".hydra").iterdir():
        text = path.read_text()
        assert SECRET not in text, path.name
        assert "alice:***@db/optuna" in text, path.name
    assert OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml")[1] == "seed=1"


def _hits(root: Path, needles: list[bytes]) -> list[str]:
    """Files under ``root`` holding any of ``needles``."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}" for n in needles if n in data]
    return found


def _database_hits(url: str, needles: list[str]) -> list[str]:
    """Rows of every table of the database at ``url`` (psycopg2) whose text holds a needle."""
    import psycopg2

    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    found = []
    with psycopg2.connect(dsn, password=SECRET) as con, con.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for schema, table in cur.fetchall():
            cur.execute(f'SELECT CAST(t AS text) FROM "{schema}"."{table}" t')
            found += [
                f"{table}: {row[0][:200]}" for row in cur if any(n in row[0] for n in needles)
            ]
    return found


@pytest.fixture(scope="module")
def secured():
    """PostgreSQL asking for SECRET (scram-sha-256, services.running(password=...)) and the
    MLflow server on it with MLflow's basic-auth app, admin USER with SECRET
    (services.running(admin=...)), in a temp folder of their own; the Services and that
    folder. Shared by this module's tests: none of them may write the password anywhere."""
    from adasparse_lab.services import pg_bin, running

    if pg_bin("initdb") is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        with running(password=SECRET, admin=(USER, SECRET)) as started:
            yield started, started.postgres.root.parent
    except StoreError as err:
        unavailable(f"the services did not start: {err}")


HIDDEN = ("PGPASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _run(
    argv: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python argv`` with no credential in its environment but those of ``env``: without
    them, the URLs' passwords must do."""
    env = {**{k: v for k, v in os.environ.items() if k not in HIDDEN}, **(env or {})}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.services
def test_a_study_writes_no_password_anywhere(secured, tmp_path):
    """Done-when test of issue 22: a quick study on PostgreSQL (which checks the password) and
    the MLflow server with a password in both URLs, its front models exported and logged, the
    report rebuilt by the report command; then every byte written is searched for the password
    (and for it in base64, as an HTTP basic-auth header): the study folder, the services'
    folder (the database files and their WAL, the artifact store, the server logs), the rows of
    both databases, and what the commands printed. Zero hits."""
    services, services_root = secured
    storage = services.storage.replace("adasparse@", f"adasparse:{SECRET}@")
    tracking = services.tracking.replace("http://", f"http://alice:{SECRET}@")
    name = "credentials"
    paths = [
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]
    sweep = _run(
        [
            *("-m", "adasparse_lab.sweep", "+study=quick", *TINY_RUN),
            *(f"study.name={name}", f"study.storage={storage}", f"tracking.uri={tracking}"),
            *("study.n_trials=2", "study.reeval.max_trials=1", "study.log_models=front"),
            *("study.poll_s=0.1", "synthetic.n_rows=6000", *paths),
        ],
        tmp_path,
        400,
    )
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    # The report opens the tracking URI the study recorded, redacted: the server's password
    # comes from the environment, as docs/cluster.md says (the server refuses it otherwise).
    report = _run(
        [
            *("-m", "adasparse_lab.report", f"study={name}"),
            *(f"storage={storage}", f"studies={tmp_path}/studies", f"out={tmp_path}/again"),
        ],
        tmp_path,
        200,
        env={"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": SECRET},
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "again" / name / "report.html").stat().st_size > 10_000
    assert list((tmp_path / "studies" / name).rglob(".hydra/config.yaml"))  # Hydra's own copy
    assert list(services.mlflow.artifacts.rglob("MLmodel"))  # a front model was logged
    basic = base64.b64encode(f"alice:{SECRET}".encode())
    needles = [SECRET.encode(), basic]
    printed = sweep.stdout + sweep.stderr + report.stdout + report.stderr
    assert SECRET not in printed and basic.decode() not in printed
    assert "alice:***@" in printed  # the URL is still shown, with its user, redacted
    assert _hits(tmp_path, needles) == []
    assert _hits(services_root, needles) == []
    for db in ("optuna", "mlflow"):
        assert _database_hits(services.postgres.url(db), [SECRET, basic.decode()]) == [], db


@pytest.mark.slow
@pytest.mark.services
def test_the_tracking_server_with_authentication_refuses_an_unauthenticated_client(
    secured, monkeypatch
):
    """Issue 22: the server started with MLflow's basic-auth app answers MLflow's REST API
    only with the admin's credentials: no credentials or a wrong password get 401, and an
    MLflow client without them is refused."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    services, _ = secured
    search = f"{services.tracking}/api/2.0/mlflow/experiments/search?max_results=10"
    assert http_status(search) == 401
    assert http_status(search, USER, "wrong-password-123") == 401
    assert http_status(search, "mallory", SECRET) == 401
    assert http_status(search, USER, SECRET) == 200
    assert http_status(f"{services.tracking}/health") == 200  # the liveness probe stays open
    for var in HIDDEN[1:]:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MlflowException, match="401|[Uu]nauthori[sz]ed|credentials"):
        MlflowClient(services.tracking).search_experiments()


@pytest.mark.slow
@pytest.mark.services
def test_a_study_runs_on_the_authenticated_server_with_credentials_from_the_environment(
    secured, tmp_path, monkeypatch
):
    """Done-when test of issue 22: a quick study whose URLs hold no password, the database's
    in PGPASSWORD and the tracking server's in MLFLOW_TRACKING_USERNAME/PASSWORD (the
    variables each library reads), completes on the authenticated server; its trial runs are
    there, readable with the credentials and refused without them."""
    import optuna
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    services, _ = secured
    name = "from-env"
    assert SECRET not in services.storage + services.tracking
    credentials = {
        "PGPASSWORD": SECRET,
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": SECRET,
    }
    sweep = _run(
        [
            *("-m", "adasparse_lab.sweep", "+study=quick", *TINY_RUN),
            *(f"study.name={name}", f"study.storage={services.storage}"),
            f"tracking.uri={services.tracking}",
            *("study.n_trials=2", "study.reference=false", "study.reeval.max_trials=0"),
            *("study.poll_s=0.1", "synthetic.n_rows=6000", "latency.enabled=false"),
            *(f"paths.studies={tmp_path}/studies", f"paths.reports={tmp_path}/reports"),
            f"paths.cache={tmp_path}/cache",
        ],
        tmp_path,
        400,
        env=credentials,
    )
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    assert SECRET not in sweep.stdout + sweep.stderr
    for var, value in credentials.items():
        monkeypatch.setenv(var, value)
    trials = optuna.load_study(study_name=name, storage=services.storage).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    client = MlflowClient(services.tracking)
    for t in done:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val/mean_domain_auc"] == pytest.approx(t.values[0])
    run_url = (
        f"{services.tracking}/api/2.0/mlflow/runs/get?run_id={done[0].user_attrs['mlflow_run_id']}"
    )
    assert http_status(run_url) == 401 and http_status(run_url, USER, SECRET) == 200
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException):
        client.get_run(done[0].user_attrs["mlflow_run_id"])


def test_log_lines_are_redacted():
    """Every handler of Hydra's job logging passes records through RedactUrls: a line that
    names a URL with its password (ours, or a library's) is written redacted."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    logging_cfg = cfg.hydra.job_logging
    assert logging_cfg.filters.redact_urls["()"] == "adasparse_lab.config.RedactUrls"
    assert all("redact_urls" in h.filters for h in logging_cfg.handlers.values())
    record = logging.LogRecord(
        "sqlalchemy",
        logging.WARNING,
        __file__,
        1,
        "connect to %s failed",
        (f"http://a:{SECRET}@h",),
        None,
    )
    assert RedactUrls().filter(record) is True
    assert record.getMessage() == "connect to http://a:***@h failed"
    try:
        raise RuntimeError(f"postgresql://u:{SECRET}@db/x refused")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    RedactUrls().filter(failed)
    text = logging.Formatter().format(failed)
    assert SECRET not in text and "postgresql://u:***@db/x refused" in text


def test_tracker_connects_with_the_password_and_records_none(monkeypatch, tmp_path):
    """A server URI's password goes to MLflow's own variables (every client of the process
    authenticates) and the client opens the URI without it; a database URI (no variable of
    MLflow's for it) is opened as given. Either way the recorded URI is redacted, and a
    recorded URI is read back without its ``***`` (the password then from the environment)."""
    from adasparse_lab.store import tracking

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    opened = []
    monkeypatch.setattr(tracking, "_client", lambda uri: opened.append(uri) or FakeClient())
    server = tracking.Tracker(f"http://alice:{SECRET}@m:5000", None, "e")
    assert server.uri == "http://alice:***@m:5000" and opened[-1] == "http://alice@m:5000"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    db = tracking.Tracker(f"postgresql://bob:{SECRET}@db/mlflow", str(tmp_path), "e")
    assert db.uri == "postgresql://bob:***@db/mlflow"
    assert opened[-1] == f"postgresql://bob:{SECRET}@db/mlflow"
    assert tracking.stored_uri(db.uri, tmp_path) == "postgresql://bob@db/mlflow"
    assert tracking.stored_uri(server.uri, tmp_path) == "http://alice@m:5000"


class FakeClient:
    """An MlflowClient that has every experiment: the Tracker's constructor needs no store."""

    def get_experiment_by_name(self, name):
        return type("Experiment", (), {"experiment_id": "1"})()


@pytest.mark.slow
def test_an_unexpected_error_prints_no_password(tmp_path):
    """An error the sweep does not expect (here SQLAlchemy's, for an unknown dialect) used to
    reach Hydra, which printed "Error executing job with overrides: [...]": the password
    with them. It is logged (redacted) and the sweep exits with a redacted message."""
    done = _run(
        [
            *("-m", "adasparse_lab.sweep", "+study=quick", f"paths.studies={tmp_path}/studies"),
            f"study.storage=postgresqlx://u:{SECRET}@127.0.0.1:5/db",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        tmp_path,
        200,
    )
    assert done.returncode != 0
    printed = done.stdout + done.stderr
    assert "error: NoSuchModuleError" in printed  # the reason, as an error line
    assert SECRET not in printed
    assert _hits(tmp_path, [SECRET.encode()]) == []
