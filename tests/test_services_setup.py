"""Finding PostgreSQL's programs, the rule that CI never skips the services' tests, and stopping
the services with a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from adasparse_lab import services
from tests import services as fixture


def test_postgres_programs_are_found_off_path_in_debians_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    found = {
        "/usr/lib/postgresql/9.6/bin/initdb",
        "/usr/lib/postgresql/15/bin/initdb",
        "/usr/lib/postgresql/13/bin/initdb",
    }
    monkeypatch.setattr(
        services.glob, "glob", lambda pattern: [p for p in found if p.endswith("/initdb")]
    )
    assert services.pg_bin("initdb") == "/usr/lib/postgresql/15/bin/initdb"  # the newest
    monkeypatch.setattr(services.glob, "glob", lambda pattern: [])
    assert services.pg_bin("initdb") is None


def test_missing_services_skip_with_the_reason_but_fail_under_ci(monkeypatch):
    monkeypatch.setattr(fixture, "REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed"):
        fixture.unavailable("PostgreSQL is not installed")
    monkeypatch.setattr(fixture, "REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="ADASPARSE_REQUIRE_SERVICES=1 but no"):
        fixture.unavailable("no initdb")


def test_a_failed_postgres_start_leaves_no_temp_folder_and_stops_nothing(monkeypatch, tmp_path):
    """initdb or pg_ctl start failing (a port taken, no disk) used to leave the temp folder
    behind; stop is only tried on a cluster that started (postmaster.pid exists)."""
    made = tmp_path / "services"
    monkeypatch.setattr(services.tempfile, "mkdtemp", lambda prefix: str(made.mkdir() or made))
    stopped = []

    def init(pg):
        pg.data.mkdir(parents=True)

    def start(pg):
        raise services.StoreError("pg_ctl start failed: could not bind")

    monkeypatch.setattr(services.Postgres, "init", init)
    monkeypatch.setattr(services.Postgres, "start", start)
    monkeypatch.setattr(services.Postgres, "stop", lambda pg, mode="fast": stopped.append(mode))
    with pytest.raises(services.StoreError, match="could not bind"), services.running():
        pass
    assert not made.exists() and stopped == []


def _port_open(url: str) -> bool:
    port = int(re.search(r":(\d+)(/|$)", url.split("@")[-1]).group(1))
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_both_services_and_removes_their_files(stop):
    """kill, systemd, Docker and Kubernetes stop with SIGTERM (a closed terminal: SIGHUP): the
    services stop both children and remove their files as on Ctrl-C."""
    from tests.test_several_machines import start_services

    proc, settings = start_services()
    assert _port_open(settings["study.storage"]) and _port_open(settings["tracking.uri"])
    proc.send_signal(stop)
    proc.wait(60)
    printed = proc.stdout.read()
    assert "PostgreSQL log: " in printed, printed  # written with the settings, in one write
    root = Path(printed.split("PostgreSQL log: ")[-1].split("/postgres/")[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        _port_open(settings["study.storage"]) or _port_open(settings["tracking.uri"])
    ):
        time.sleep(0.2)
    assert not _port_open(settings["study.storage"]), "PostgreSQL still listens"
    assert not _port_open(settings["tracking.uri"]), "the MLflow server still listens"
    assert not root.exists(), f"{root} left behind"
    assert proc.returncode == 0


@pytest.mark.services
@pytest.mark.slow
def test_a_stop_signal_during_the_start_leaves_nothing_behind():
    """A SIGTERM while PostgreSQL is still being made (a user changing their mind, a scheduler
    stopping the job) ends quietly: no temp folder, no traceback, status 0."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.conftest import ROOT

    if services.pg_bin("initdb") is None:
        fixture.unavailable("PostgreSQL is not installed")
    # Not under pytest's tmp_path: its parents are private to root, and initdb, run as the
    # unprivileged postgres user, must reach the data folder (as under /tmp, the default).
    tmp = Path(tempfile.mkdtemp(prefix="adasparse-stop-"))
    os.chmod(tmp, 0o755)
    try:
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "adasparse_lab.services"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        # initdb is writing the cluster (its single-user postgres may be running too)
        while not list(tmp.glob("adasparse-services-*/postgres/pgdata/base")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert list(tmp.iterdir()) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


DB_SECRET = "Sv9Kq2Secret"


def test_password_from_env_needs_pgpassword(monkeypatch, capsys):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(SystemExit) as stopped:
        services.main(["--password-from-env"])
    assert stopped.value.code == 2
    assert "PGPASSWORD" in capsys.readouterr().err


@pytest.mark.services
@pytest.mark.slow
def test_services_with_a_password_refuse_a_client_without_it(monkeypatch):
    """``--password-from-env``: PostgreSQL authenticates with scram-sha-256 and $PGPASSWORD
    (the MLflow server's backend connection included); the printed URLs hold no password."""
    import optuna
    import psycopg2
    from mlflow.tracking import MlflowClient

    if services.pg_bin("initdb") is None:
        fixture.unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with services.running(password=DB_SECRET) as started:
        url = started.storage
        assert DB_SECRET not in url and DB_SECRET not in started.tracking
        dsn = url.replace("postgresql+psycopg2://", "postgresql://")
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(dsn).close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(dsn, password="wrong").close()
        with_password = url.replace("adasparse@", f"adasparse:{DB_SECRET}@")
        study = optuna.create_study(storage=with_password, study_name="scram")
        study.tell(study.ask(), 1.0)
        monkeypatch.setenv("PGPASSWORD", DB_SECRET)  # libpq's own variable: the URL needs none
        assert optuna.load_study(study_name="scram", storage=url).best_value == 1.0
        assert MlflowClient(started.tracking).search_experiments()  # its backend let it in


ADMIN, ADMIN_SECRET = "admin", "Mk4Rt8wAdminSecret"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "admin"}, "MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "short"}, "12"),
    ],
)
def test_auth_needs_the_admin_credentials_in_the_environment(monkeypatch, capsys, env, message):
    """``--auth`` takes the tracking server's admin from MLflow's client variables (never
    argv); without them, or with a password MLflow's basic-auth would refuse, it stops before
    starting anything."""
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as stopped:
        services.main(["--auth"])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_the_auth_config_names_the_admin_and_its_database_but_holds_no_password(tmp_path):
    """MLflow's basic-auth reads MLFLOW_AUTH_CONFIG_PATH: the file written in the services'
    folder points to an auth database there and names the admin; the password reaches
    MLflow as MLFLOW_AUTH_ADMIN_PASSWORD in the server's environment only, so no file holds
    it (the auth database keeps MLflow's hash of it)."""
    import configparser

    folder = tmp_path / "mlflow-auth"
    ini = services.write_auth_config(folder, ADMIN)
    assert ini.parent == folder and (folder.stat().st_mode & 0o777) == 0o700
    config = configparser.ConfigParser()
    config.read(ini)
    assert config["mlflow"]["database_uri"] == f"sqlite:///{folder / 'auth.db'}"
    assert config["mlflow"]["admin_username"] == ADMIN
    assert "admin_password" not in config["mlflow"]
    assert int(config["mlflow"]["auth_cache_ttl_seconds"]) > 0  # one slow hash per minute
    server = services.MlflowServer(
        "sqlite://", tmp_path, 1, tmp_path / "mlflow.log", admin=(ADMIN, ADMIN_SECRET)
    )
    env = server.environment()
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == ADMIN_SECRET
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "mlflow-auth" / "basic_auth.ini")
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32  # a fresh random key per start
    assert server.command()[-2:] == ["--app-name", "basic-auth"]
    assert ADMIN_SECRET not in " ".join(server.command())
    config.read(services.write_auth_config(tmp_path / "100%", "ad%min"))  # read as written
    assert config["mlflow"]["admin_username"] == "ad%min"
    assert config["mlflow"]["database_uri"].endswith("/100%/auth.db")
    plain = services.MlflowServer("sqlite://", tmp_path, 1, tmp_path / "mlflow.log")
    assert "--app-name" not in plain.command()
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in plain.environment()


def test_make_services_asks_for_authentication_when_the_credentials_are_set():
    """``make services`` adds --auth when MLFLOW_TRACKING_PASSWORD is set, as it adds
    --password-from-env for PGPASSWORD (a dry run: nothing is started)."""
    import shutil
    import subprocess

    from tests.conftest import ROOT

    if shutil.which("make") is None:
        pytest.skip("no make")

    # (an in-process study of another test may have handed a password to the environment;
    # under ``make test`` the outer make's level would add "make[1]: Leaving directory" lines)
    dropped = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "PGPASSWORD")
    dropped += ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}

    def dry_run(*assignments: str) -> str:
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", "services", *assignments],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert dry_run().endswith("-m adasparse_lab.services")
    line = dry_run("MLFLOW_TRACKING_PASSWORD=x", "PGPASSWORD=y")
    assert line.endswith("-m adasparse_lab.services --password-from-env --auth"), line
    assert "x" not in line.split("services")[-1].replace("--password-from-env --auth", "")


@pytest.mark.services
@pytest.mark.slow
def test_services_with_auth_refuse_a_stranger_and_stop_without_a_trace():
    """``MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=... python -m
    adasparse_lab.services --auth`` (what ``make services`` runs with them set): the tracking
    server answers 401 without the credentials or with a wrong password, 200 with them; the
    password is in no file of the services' folder and not printed; SIGTERM stops both and
    removes the folder, the auth database and its config included."""

    from tests.test_several_machines import start_services

    def status(url: str, password: str | None) -> int:
        return fixture.http_status(url, None if password is None else ADMIN, password)

    credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_SECRET}
    proc, settings = start_services("--auth", env=credentials)
    try:
        printed = proc.stdout.readline()  # the line after the settings
        assert "PostgreSQL log: " in printed and "basic-auth" in printed, printed
        root = Path(printed.split("PostgreSQL log: ")[-1].split("/postgres/")[0])
        search = f"{settings['tracking.uri']}/api/2.0/mlflow/experiments/search?max_results=5"
        assert status(search, None) == 401
        assert status(search, "not-the-password") == 401
        assert status(search, ADMIN_SECRET) == 200
        assert list(root.rglob("auth.db"))  # MLflow's auth database, in the services' folder
        written = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        assert [p for p in written if ADMIN_SECRET.encode() in p.read_bytes()] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    printed += proc.stdout.read() + proc.stderr.read()
    assert ADMIN_SECRET not in printed
    assert not root.exists(), f"{root} left behind"
    assert proc.returncode == 0
