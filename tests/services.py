"""The ``services`` fixture: a throwaway PostgreSQL cluster and an MLflow server on it
(adasparse_lab/services.py), started once per test session on free ports of 127.0.0.1.

Where they cannot start (no PostgreSQL installed, no psycopg2), tests using the fixture skip
saying why, except under ``ADASPARSE_REQUIRE_SERVICES=1`` (set by .ci/run): there they fail.
"""

from __future__ import annotations

import os

import pytest

from adasparse_lab.errors import StoreError

REQUIRED = os.environ.get("ADASPARSE_REQUIRE_SERVICES") == "1"


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    """The HTTP status of GET ``url``, with basic authentication when ``user`` is given."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"ADASPARSE_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def services():
    from adasparse_lab.services import pg_bin, running

    if pg_bin("initdb") is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is missing (pip install -e '.[dev]')")
    try:
        with running() as started:  # a temp dir nobody (PostgreSQL under root) can enter
            yield started
    except StoreError as err:
        unavailable(f"the services did not start: {err}")
