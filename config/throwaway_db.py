"""Throw-away PostgreSQL databases: how benchmarks and stress runs reach the server and drop what they made.

The import, identification and scale benchmarks and the stress run each work in a database of their
own, so the user's data is never touched. They reach the server of Django's default database (or the
embedded one) the same way and drop their database the same way; this module is that one way.
Django is imported only where Django's settings are read (the stress run sets its environment up
before Django and uses ``drop`` with the embedded server's URL).
"""

from __future__ import annotations

from urllib.parse import quote


def server_params() -> dict[str, str]:
    """libpq keywords (user, password, host, port) for the server of Django's default database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {"user": db.get("USER"), "password": db.get("PASSWORD"), "host": db.get("HOST"), "port": db.get("PORT")}
    return {key: str(value) for key, value in params.items() if value}


def database_url(name: str) -> str:
    """A libpq URL for database ``name`` on Django's server (for a child process's DATABASE_URL)."""
    params = server_params()
    auth = quote(params.get("user", ""), safe="")
    if params.get("password"):
        auth += ":" + quote(params["password"], safe="")
    host = quote(params.get("host", ""), safe="") + (f":{params['port']}" if params.get("port") else "")
    return f"postgresql://{auth}@{host}/{name}"


def drop(name: str, conninfo: str = "", **params: str) -> None:
    """DROP DATABASE IF EXISTS ``name``, closing its open connections (a run stopped mid-way leaves some).

    ``conninfo`` (a libpq URL or keyword string) and ``params`` say how to reach the server; the
    statement runs from its ``postgres`` database. The name is quoted as an identifier.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, **{**params, "dbname": "postgres"}, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
