"""``session-users <ini> ...``: manage the users of a deployment.

    session-users production.ini add carol            # prompts for a password
    session-users production.ini passwd carol
    session-users production.ini grant-admin carol
    session-users production.ini revoke-admin carol
    session-users production.ini list
    session-users development.ini seed-demo           # alice/alice, admin/admin; SQLite only

Bootstrapped from the ini, so it reads the same settings the server does.
"""
from __future__ import annotations

import argparse
import getpass
import sys

from pyramid.paster import bootstrap, setup_logging
from sqlalchemy import select

from ..models import User

DEMO_USERS = (("alice", "alice", False), ("admin", "admin", True))


class UsageError(Exception):
    pass


def _prompt_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the passwords differ")
    if len(password) < 8:
        raise UsageError("a password needs 8 characters or more")
    return password


def _get(dbsession, username) -> User:
    user = dbsession.scalar(select(User).where(User.username == username))
    if user is None:
        raise UsageError(f"no user {username!r}")
    return user


def run(args, dbsession, settings, out=None) -> None:
    out = out or sys.stdout
    if args.command == "add":
        if dbsession.scalar(select(User).where(User.username == args.username)):
            raise UsageError(f"user {args.username!r} exists already")
        user = User(username=args.username, is_admin=args.admin)
        user.set_password(_prompt_password(args))
        dbsession.add(user)
        print(f"added {args.username}" + (" (admin)" if args.admin else ""), file=out)
    elif args.command == "passwd":
        _get(dbsession, args.username).set_password(_prompt_password(args))
        print(f"password of {args.username} changed", file=out)
    elif args.command in ("grant-admin", "revoke-admin"):
        _get(dbsession, args.username).is_admin = args.command == "grant-admin"
        print(f"{args.username}: {args.command}", file=out)
    elif args.command == "list":
        for user in dbsession.scalars(select(User).order_by(User.username)):
            print(f"{user.username}{'  admin' if user.is_admin else ''}", file=out)
    elif args.command == "seed-demo":
        if not str(settings.get("sqlalchemy.url", "")).startswith("sqlite"):
            raise UsageError("demo users go into a SQLite development database only")
        for username, password, admin in DEMO_USERS:
            if dbsession.scalar(select(User).where(User.username == username)) is None:
                user = User(username=username, is_admin=admin)
                user.set_password(password)
                dbsession.add(user)
                print(f"added demo user {username} (password {password!r})", file=out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="session-users", description=__doc__.split("\n")[0])
    p.add_argument("ini", help="the app's ini file, e.g. production.ini")
    commands = p.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user (prompts for the password)")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="with the admin permission")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = commands.add_parser("passwd", help="set a user's password (prompted)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    for name in ("grant-admin", "revoke-admin"):
        commands.add_parser(name).add_argument("username")
    commands.add_parser("list", help="list users")
    commands.add_parser("seed-demo", help="add alice/alice and admin/admin (development only)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.ini)
    with bootstrap(args.ini) as env:
        request = env["request"]
        try:
            with request.tm:
                run(args, request.dbsession, env["registry"].settings)
        except UsageError as error:
            print(f"session-users: {error}", file=sys.stderr)
            return 2
        finally:
            env["registry"].session_expiry.store.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
