"""``session-expiry-db <ini> upgrade``: the add-on's tables, for a host app without Alembic.

    session-expiry-db production.ini upgrade     # create or upgrade the tables; idempotent
    session-expiry-db production.ini current     # the revision the database is at

The database is the SQL store's (``session.url``, else ``sqlalchemy.url``, filled from the
environment as the server fills them). The Redis store keeps no tables: the command says
so and exits 0. The add-on's revisions are the branch
``session_expiry`` shipped inside the package; this command keeps its place in a version
table of its own (``session_expiry_alembic_version``), so it never meets the host's
``alembic_version``. A host that runs Alembic itself adds the same revisions to its own
history instead (``docs/add-on.md``, "Tables").

Exit codes: 0 done; 1 the database could not be reached; 2 bad arguments or settings.
"""
from __future__ import annotations

import argparse
import io
import os
import sys

from alembic import command
from alembic.config import Config
from pyramid.exceptions import ConfigurationError
from sqlalchemy.exc import OperationalError

from .. import settings as settings_module

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
#: Where this command keeps the revision the add-on's tables are at.
VERSION_TABLE = "session_expiry_alembic_version"
#: The add-on's Alembic environment and revisions, inside the installed package.
SCRIPT_LOCATION = "session_expiry:migrations"


def alembic_config(url: str, out=None) -> Config:
    """Alembic's configuration for the add-on's tables in the database at ``url``."""
    config = Config(stdout=out or sys.stdout)
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser syntax
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="session-expiry-db",
                                description="Create or upgrade the session store's tables.")
    p.add_argument("ini", help="the app's ini file, e.g. production.ini (or file.ini#name)")
    p.add_argument("command", choices=("upgrade", "current"))
    return p


#: The stores that keep no tables.
TABLELESS = ("expiry:redis",)


def store_url(ini: str) -> str | None:
    """The SQL store's database URL, as the server reads it from ``ini``; None when the
    store keeps no tables."""
    path, _, name = ini.partition("#")
    _, policy = settings_module.load(settings_module.from_ini(path, name or "main"))
    if policy.store_type in TABLELESS:
        return None
    if policy.store_url is None:
        raise ConfigurationError("session.url: the SQL store needs a database; write "
                                 "sqlalchemy.url or session.url, or set SQLALCHEMY_URL")
    return policy.store_url


def main(argv=None, out=None) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    if not os.path.isfile(args.ini.partition("#")[0]):
        print(f"session-expiry-db: no such ini file: {args.ini}", file=sys.stderr)
        return EXIT_USAGE
    try:
        url = store_url(args.ini)
    except (ConfigurationError, LookupError) as error:
        print(f"session-expiry-db: {error}", file=sys.stderr)
        return EXIT_USAGE
    if url is None:
        print("session tables: none needed; session.type = expiry:redis keeps the sessions "
              "in Redis", file=out)
        return EXIT_OK
    report = io.StringIO()
    try:
        if args.command == "upgrade":
            command.upgrade(alembic_config(url, report), "heads")
        command.current(alembic_config(url, report))
    except OperationalError as error:
        reason = str(error.orig).splitlines()[0] if error.orig else str(error)
        print(f"session-expiry-db: the session database cannot be reached: {reason}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RuntimeError as error:  # a migration that will not run on this database says why
        print(f"session-expiry-db: {error}", file=sys.stderr)
        return EXIT_USAGE
    revision = report.getvalue().strip() or "nothing yet"
    done = "up to date" if args.command == "upgrade" else "at"
    print(f"session tables {done}: {revision}", file=out)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
