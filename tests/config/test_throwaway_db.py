"""config.throwaway_db: the benchmarks' and stress run's way to reach the server and drop their database."""

from __future__ import annotations

import os

import dj_database_url
import psycopg
import pytest
from django.conf import settings

from config import throwaway_db


def _exists(name: str) -> bool:
    with psycopg.connect(**throwaway_db.server_params(), dbname="postgres") as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


@pytest.fixture
def made():
    """A database made on the test server, with a name that needs quoting; dropped whatever happens."""
    name = f'obverse_throwaway "{os.getpid()}"'
    with psycopg.connect(**throwaway_db.server_params(), dbname="postgres", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    yield name
    with psycopg.connect(**throwaway_db.server_params(), dbname="postgres", autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {}").format(psycopg.sql.Identifier(name)))


def test_drop_removes_the_database_even_with_a_connection_open(made):
    assert _exists(made)
    left_open = psycopg.connect(**throwaway_db.server_params(), dbname=made)  # as a stopped run leaves one
    try:
        throwaway_db.drop(made, **throwaway_db.server_params())
    finally:
        left_open.close()
    assert not _exists(made)


def test_drop_reaches_the_server_by_url_too(made):
    throwaway_db.drop(made, throwaway_db.database_url("postgres"))
    assert not _exists(made)


def test_dropping_a_database_that_is_not_there_is_not_an_error():
    throwaway_db.drop(f"obverse_never_made_{os.getpid()}", **throwaway_db.server_params())


def test_database_url_names_the_same_server_as_django():
    parsed = dj_database_url.parse(throwaway_db.database_url("some_db"))
    default = settings.DATABASES["default"]
    assert parsed["NAME"] == "some_db"
    for key in ("USER", "PASSWORD", "HOST", "PORT"):
        assert str(parsed[key] or "") == str(default.get(key) or ""), key
