"""Local services for a study on several machines, started for tests and by ``make services``:
a throwaway PostgreSQL cluster (Optuna storage and MLflow backend store) and an ``mlflow
server`` on it with a local artifact root, both bound to 127.0.0.1 on free ports.

``python -m adasparse_lab.services [--dir DIR] [--password-from-env] [--auth]`` starts both,
prints the URLs to pass as ``study.storage=...`` and ``tracking.uri=...``, and stays in the
foreground until Ctrl-C (or SIGTERM, SIGHUP). With ``--password-from-env`` PostgreSQL
authenticates with scram-sha-256 and the password in ``$PGPASSWORD`` (libpq's own variable,
which the workers and the MLflow server read too) instead of trusting every local connection.
With ``--auth`` the tracking server runs MLflow's basic-auth app (``--app-name basic-auth``)
whose admin is ``$MLFLOW_TRACKING_USERNAME`` with ``$MLFLOW_TRACKING_PASSWORD`` (MLflow's client
variables, which the workers set too): the password reaches the server as
``MLFLOW_AUTH_ADMIN_PASSWORD`` in its environment, never argv or a file; MLflow keeps only its
hash, in an auth database in the services' folder. The URLs printed hold no password.

PostgreSQL refuses to run as root: as root, the cluster is made and run by ``nobody``
(``subprocess``'s ``user=``). Debian keeps its binaries under /usr/lib/postgresql/<v>/bin,
off PATH: both places are searched.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adasparse_lab.errors import StoreError

UNPRIVILEGED = "nobody"
DB_USER, DB_NAMES = "adasparse", ("optuna", "mlflow")
AUTH_DIR = "mlflow-auth"  # MLflow's basic-auth config and database, in the services' folder
MIN_AUTH_PASSWORD = 12  # MLflow's basic-auth refuses shorter passwords (_validate_password)
AUTH_CACHE_S = 60  # how long the server trusts a checked password (MLflow's auth cache)


def pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL program (initdb, pg_ctl, ...): PATH first, then Debian's folders."""
    found = shutil.which(name)
    if found:
        return found
    debian = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")  # .../<version>/bin/<name>
    return max(debian, key=lambda p: _version(Path(p).parents[1].name), default=None)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in text.split("."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner() -> dict:
    """subprocess kwargs that run PostgreSQL's programs as an unprivileged user under root."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED, "group": pwd.getpwnam(UNPRIVILEGED).pw_gid}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        os.chown(path, user.pw_uid, user.pw_gid)


def _kill_group(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGKILL ``proc``'s process group and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # raises once no process of the group exists
        except ProcessLookupError:
            return
        time.sleep(0.02)


@dataclass
class Postgres:
    """A throwaway cluster in ``root`` on 127.0.0.1:``port``: trust authentication, or
    scram-sha-256 for user ``adasparse`` with ``password``."""

    root: Path
    port: int
    password: str | None = None

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{db}"

    @staticmethod
    def program(name: str) -> str:
        """``name`` from the folder of initdb: one PostgreSQL version for every program."""
        return str(Path(pg_bin("initdb")).parent / name)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program in its own process group: a stop signal mid-way (initdb
        runs postgres in single-user mode as its child) kills the whole group and waits for
        it, so the cleanup that follows removes a folder nothing writes into any more."""
        with subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **_as_owner(),
        ) as proc:
            try:
                out, err = proc.communicate()
            except BaseException:
                _kill_group(proc)
                raise
        done = subprocess.CompletedProcess(args, proc.returncode, out, err)
        if done.returncode != 0:
            raise StoreError(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout}")
        return done

    def init(self) -> None:
        initdb = pg_bin("initdb")
        if initdb is None:
            raise StoreError(
                "PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql): "
                "apt-get install postgresql"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        _chown(self.root)
        args = [initdb, "-D", str(self.data), "-U", DB_USER, "-E", "UTF8"]
        if self.password is None:
            self._run(*args, "-A", "trust")
            return
        pwfile = self.root / "pwfile"  # initdb reads the password from a file, never argv
        pwfile.touch(mode=0o600)
        _chown(pwfile)
        try:
            pwfile.write_text(self.password + "\n")
            self._run(*args, "-A", "scram-sha-256", f"--pwfile={pwfile}")
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run(
            self.program("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", log, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(self.program("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_databases(self) -> None:
        for db in DB_NAMES:
            self.createdb(db)

    def createdb(self, db: str) -> None:
        """CREATE DATABASE through psycopg2 (createdb is not always beside initdb)."""
        import psycopg2

        con = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            dbname="postgres",
            password=self.password,  # None: trust, or $PGPASSWORD
        )
        try:
            con.autocommit = True  # CREATE DATABASE runs outside a transaction
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db}"')
        finally:
            con.close()


def write_auth_config(folder: Path, admin_username: str) -> Path:
    """MLflow's basic-auth config (read from ``MLFLOW_AUTH_CONFIG_PATH``) in ``folder``, made
    private (0700): its auth database beside it, ``admin_username`` as the admin to create. No
    ``admin_password``: MLflow reads it from ``MLFLOW_AUTH_ADMIN_PASSWORD`` when it creates the
    admin in an empty auth database, and stores only its hash."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # the auth database holds password hashes
    ini = folder / "basic_auth.ini"

    def value(text: str) -> str:  # configparser's interpolation reads '%' as a reference
        return text.replace("%", "%%")

    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{value(str(folder / 'auth.db'))}\n"
        f"admin_username = {value(admin_username)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A checked password is remembered (as an HMAC under a per-process key) for a minute:
        # each check is a deliberately slow hash (0.2 s of CPU here), and a trial makes dozens
        # of requests. One server worker, so no other worker's cache can go stale.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )
    return ini


@dataclass
class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend store and a local artifact root; with
    ``admin`` (username, password), MLflow's basic-auth app with that admin, its config and
    auth database in the ``mlflow-auth`` folder beside the log."""

    backend: str
    artifacts: Path
    port: int
    log: Path
    db_password: str | None = None  # the backend store's, passed as $PGPASSWORD
    admin: tuple[str, str] | None = None  # basic-auth's admin, passed in the environment
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_config(self) -> Path:
        return self.log.parent / AUTH_DIR / "basic_auth.ini"

    def environment(self) -> dict[str, str]:
        """The server's environment: secrets go here, never on its command line."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.db_password is not None:
            env["PGPASSWORD"] = self.db_password
        if self.admin is not None:
            username, password = self.admin
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.auth_config)
            env["MLFLOW_AUTH_ADMIN_USERNAME"] = username
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
            # Flask's key for the auth app's CSRF tokens: one process, so a fresh one per start
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        return env

    def command(self) -> list[str]:
        cmd = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", self.backend),
            *("--artifacts-destination", str(self.artifacts)),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        if self.admin is not None:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def start(self, timeout_s: float = 120) -> None:
        env = self.environment()
        if self.admin is not None:
            write_auth_config(self.auth_config.parent, self.admin[0])
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise StoreError(f"mlflow server exited ({self.proc.returncode}): {tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise StoreError(
            f"mlflow server not up on {self.url} after {timeout_s:.0f}s: see {self.log}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@dataclass
class Services:
    postgres: Postgres
    mlflow: MlflowServer

    @property
    def storage(self) -> str:
        """The Optuna storage URL (``study.storage=``)."""
        return self.postgres.url("optuna")

    @property
    def tracking(self) -> str:
        """The MLflow tracking URI (``tracking.uri=``)."""
        return self.mlflow.url


@contextlib.contextmanager
def running(
    root: Path | None = None,
    password: str | None = None,
    admin: tuple[str, str] | None = None,
) -> Iterator[Services]:
    """Start PostgreSQL and the MLflow server under ``root`` (a temp dir when None), the
    database with scram-sha-256 and ``password`` when given (else trust), the server with
    MLflow's basic-auth app and ``admin`` (username, password) when given (else open); stop
    and remove them on exit."""
    tmp = None if root is not None else tempfile.mkdtemp(prefix="adasparse-services-")
    root = Path(root or tmp)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # an unprivileged postgres must reach its folder inside
    pg = Postgres(root / "postgres", free_port(), password)
    server = None
    try:
        pg.init()
        pg.start()
        pg.create_databases()
        artifacts = root / "mlartifacts"
        artifacts.mkdir(exist_ok=True)
        server = MlflowServer(
            pg.url("mlflow"), artifacts, free_port(), root / "mlflow.log", password, admin
        )
        server.start()
        yield Services(pg, server)
    finally:
        if server is not None:
            server.stop()
        if (pg.data / "postmaster.pid").exists():  # a cluster that started
            with contextlib.suppress(StoreError):
                pg.stop("immediate")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _admin_from_env(parser: argparse.ArgumentParser) -> tuple[str, str]:
    """``--auth``'s admin from MLflow's client variables, or a usage error naming them."""
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not username and not password:
        parser.error(
            "--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the tracking"
            " server's admin (the workers set the same)"
        )
    if not username or not password:
        missing = "MLFLOW_TRACKING_PASSWORD" if username else "MLFLOW_TRACKING_USERNAME"
        parser.error(f"--auth: set {missing} too")
    if len(password) < MIN_AUTH_PASSWORD:
        parser.error(
            f"--auth: MLflow's basic-auth needs a password of at least {MIN_AUTH_PASSWORD}"
            " characters in MLFLOW_TRACKING_PASSWORD"
        )
    return username, password


def _stop_as_on_ctrl_c(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="keep the services' files here (default: temp)")
    parser.add_argument(
        "--password-from-env",
        action="store_true",
        help="PostgreSQL with scram-sha-256 and the password in $PGPASSWORD (default: trust)",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="the tracking server with MLflow's basic-auth app, its admin"
        " $MLFLOW_TRACKING_USERNAME with $MLFLOW_TRACKING_PASSWORD (default: no authentication)",
    )
    args = parser.parse_args(argv)
    password = None
    if args.password_from_env:
        password = os.environ.get("PGPASSWORD")
        if not password:
            parser.error("--password-from-env: set PGPASSWORD to the database password")
    admin = None
    if args.auth:
        admin = _admin_from_env(parser)
    # kill, systemd, Docker and Kubernetes stop with SIGTERM, a closed terminal with SIGHUP: both
    # stop the two services and remove their files as Ctrl-C does (running()'s cleanup).
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _stop_as_on_ctrl_c)
    # A stop signal at any moment (during the start, between the lines) ends here, cleaned up.
    with contextlib.suppress(KeyboardInterrupt), running(args.dir, password, admin) as services:
        # one write: a reader that saw the settings also sees the log line (PYTHONUNBUFFERED=1
        # made three prints three writes, and a stop between them lost the third)
        auth = (
            "; the tracking server asks for MLflow basic-auth credentials"
            " (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)"
            if admin is not None
            else ""
        )
        sys.stdout.write(
            f"study.storage={services.storage}\n"
            f"tracking.uri={services.tracking}\n"
            f"(PostgreSQL log: {services.postgres.root}/postgres.log{auth};"
            " Ctrl-C or SIGTERM stops both)\n"
        )
        sys.stdout.flush()
        signal.pause()


if __name__ == "__main__":
    main()
