"""``session-users <ini> ...``: manage the users of a deployment and their sessions.

    session-users production.ini add carol [--admin]  # prompts for a password
    session-users production.ini passwd carol         # prompts; ends carol's sessions
    session-users production.ini grant-admin carol
    session-users production.ini revoke-admin carol   # ends carol's sessions
    session-users production.ini remove carol         # deletes carol; ends her sessions
    session-users production.ini sessions carol       # carol's open sessions
    session-users production.ini end-sessions carol   # signs carol out everywhere
    session-users production.ini list
    session-users development.ini seed-demo           # alice/alice, admin/admin; SQLite only

Bootstrapped from the ini, so it reads the same settings the server does.

``passwd``, ``revoke-admin`` and ``remove`` commit the change to the user
first, then end every open session of that user with reason ``revoked`` (each
fires its ``SessionEnded`` once), and say how many ended. The sessions are in
reach only with a shared store (``expiry:sql``, ``expiry:redis``): the memory
store lives inside the server process, so there the change is made and a note
says how to end the sessions on the server (``/admin/sessions``, "Revoke every
session"); ``sessions`` and ``end-sessions`` refuse to run.

Exit codes: 0 done; 1 the session store could not be reached (a change to
the user is committed all the same, and stderr says how to end the sessions
later); 2 bad arguments, an unknown user, or ``sessions``/``end-sessions``
with the memory store.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass

from pyramid.paster import bootstrap, setup_logging
from sqlalchemy import select

from session_expiry.decision import Reason
from session_expiry.reports.devices import describe_device
from session_expiry.reports.views import span, when
from session_expiry.stores import StoreUnavailable

from ..models import User

DEMO_USERS = (("alice", "alice", False), ("admin", "admin", True))

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
#: Commands that change a user, then end that user's sessions (reason ``revoked``).
ENDING_COMMANDS = ("passwd", "revoke-admin", "remove")
#: Commands about sessions alone: they need a store this process can reach.
SESSION_COMMANDS = ("sessions", "end-sessions")


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """The user whose sessions a command lists or ends, once its change is committed."""

    user_id: str
    #: How messages name the user: "carol", or "user 7" when given by id.
    label: str
    #: What the command did to the user ("password of carol changed"); None: nothing.
    done: str | None = None
    #: The user was removed: only their id can name them from now on.
    removed: bool = False


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


def _add(args, dbsession, settings, out) -> None:
    if dbsession.scalar(select(User).where(User.username == args.username)):
        raise UsageError(f"user {args.username!r} exists already")
    user = User(username=args.username, is_admin=args.admin)
    user.set_password(_prompt_password(args))
    dbsession.add(user)
    print(f"added {args.username}" + (" (admin)" if args.admin else ""), file=out)


def _passwd(args, dbsession, settings, out) -> Target:
    user = _get(dbsession, args.username)
    user.set_password(_prompt_password(args))
    return Target(str(user.id), args.username, f"password of {args.username} changed")


def _grant_admin(args, dbsession, settings, out) -> None:
    _get(dbsession, args.username).is_admin = True
    print(f"{args.username}: grant-admin", file=out)


def _revoke_admin(args, dbsession, settings, out) -> Target:
    user = _get(dbsession, args.username)
    user.is_admin = False
    return Target(str(user.id), args.username, f"{args.username}: revoke-admin")


def _remove(args, dbsession, settings, out) -> Target:
    user = _get(dbsession, args.username)
    dbsession.delete(user)
    return Target(str(user.id), args.username, f"removed {args.username}", removed=True)


def _sessions_of(args, dbsession, settings, out) -> Target:
    if args.user_id:
        return Target(args.user_id, f"user {args.user_id}")
    return Target(str(_get(dbsession, args.username).id), args.username)


def _list(args, dbsession, settings, out) -> None:
    for user in dbsession.scalars(select(User).order_by(User.username)):
        print(f"{user.username}{'  admin' if user.is_admin else ''}", file=out)


def _seed_demo(args, dbsession, settings, out) -> None:
    if not str(settings.get("sqlalchemy.url", "")).startswith("sqlite"):
        raise UsageError("demo users go into a SQLite development database only")
    for username, password, admin in DEMO_USERS:
        if dbsession.scalar(select(User).where(User.username == username)) is None:
            user = User(username=username, is_admin=admin)
            user.set_password(password)
            dbsession.add(user)
            print(f"added demo user {username} (password {password!r})", file=out)


COMMANDS = {"add": _add, "passwd": _passwd, "grant-admin": _grant_admin,
            "revoke-admin": _revoke_admin, "remove": _remove, "sessions": _sessions_of,
            "end-sessions": _sessions_of, "list": _list, "seed-demo": _seed_demo}


def run(args, dbsession, settings, out=None) -> Target | None:
    """Make the change ``args`` asks for to the users (the caller commits it).

    Returns the user whose sessions are to be listed or ended after the commit
    (``passwd``, ``revoke-admin``, ``remove``, ``sessions``, ``end-sessions``);
    those commands print nothing here: :func:`settle` reports them.
    """
    return COMMANDS[args.command](args, dbsession, settings, out or sys.stdout)


# -- the sessions, after the commit -----------------------------------------------------------

def _count(sessions: list) -> str:
    return f"{len(sessions)} session{'s' if len(sessions) != 1 else ''} ended"


def _revoke_page(target: Target) -> str:
    """Where an administrator ends the target's sessions on the server itself."""
    direct = f"/admin/sessions/revoke?user={target.user_id}"
    if target.removed:
        return f'{direct} ("Revoke every session of {target.label}?")'
    return (f'/admin/sessions?user={target.label} → "Revoke every session of '
            f'{target.label}…" (or straight to {direct})')


def memory_store_note(target: Target) -> str:
    """Why the target's sessions stay open with the memory store, and how to end them."""
    return (f"note: {target.label}'s open sessions were not ended: with session.type = "
            "expiry:memory they live inside the server process, which this script cannot "
            f"reach, and they stay signed in until ended there. Sign them out at "
            f"{_revoke_page(target)}, or restart the server, which ends every session.")


def _later_command(ini: str, target: Target) -> str:
    who = f"--user-id {target.user_id}" if target.removed else target.label
    return f"session-users {ini} end-sessions {who}"


def list_sessions(store, target: Target, now: int, out) -> None:
    """One line per live session, most recently seen first."""
    records = store.user_sessions(target.user_id, now)
    if not records:
        print("no open sessions", file=out)
    for record in records:
        left = record.remaining(now)
        print("  ".join((
            record.key[:12], f"started {when(record.created)}",
            f"last seen {when(record.last_seen)}",
            f"{span(left)} left",
            record.ip or "no IP", describe_device(record.user_agent))), file=out)


def settle(args, target: Target, expiry, out=None, err=None) -> int:
    """List or end ``target``'s sessions, now that the change to the user is committed."""
    out, err = out or sys.stdout, err or sys.stderr
    if not expiry.policy.shared_store:  # only an ending command gets here
        print(target.done, file=out)
        print(f"session-users: {memory_store_note(target)}", file=err)
        return EXIT_OK
    now = int(expiry.clock())
    try:
        if args.command == "sessions":
            list_sessions(expiry.store, target, now, out)
            return EXIT_OK
        ended = expiry.store.end_user_sessions(target.user_id, Reason.REVOKED, now)
    except StoreUnavailable as error:
        if target.done is None:
            print(f"session-users: the session store cannot be reached: {error}", file=err)
        else:
            print(target.done, file=out)
            print(f"session-users: {target.label}'s open sessions were not ended: the session "
                  f"store cannot be reached: {error}. The change is committed; once the "
                  f"store is back, run: {_later_command(args.ini, target)}", file=err)
        return EXIT_UNAVAILABLE
    if target.done is None:
        print(f"{target.label}: {_count(ended)}", file=out)
    else:
        print(f"{target.done}; {_count(ended)}", file=out)
    return EXIT_OK


# -- the command line -------------------------------------------------------------------------

def _user_id(text: str) -> str:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a user id (a whole number)")
    return str(int(text))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="session-users", description=__doc__.split("\n")[0].replace("``", ""),
        epilog="passwd, revoke-admin and remove end the user's open sessions (reason revoked) "
               "after committing the change; with session.type = expiry:memory they cannot "
               "reach them and say how to end them at /admin/sessions. Exit codes: 0 done; "
               "1 the session store cannot be reached; 2 bad arguments or unknown user.")
    p.add_argument("ini", help="the app's ini file, e.g. production.ini")
    commands = p.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user (prompts for the password)")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="with the admin permission")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = commands.add_parser(
        "passwd", help="set a user's password (prompted) and end their open sessions")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin")
    commands.add_parser("grant-admin", help="give a user the admin permission") \
        .add_argument("username")
    commands.add_parser("revoke-admin", help="take the admin permission away and end "
                        "the user's open sessions").add_argument("username")
    commands.add_parser("remove", help="delete a user and end their open sessions") \
        .add_argument("username")
    for name, text in (("sessions", "list a user's open sessions "
                        "(expiry:sql, expiry:redis)"),
                       ("end-sessions", "end a user's open sessions, reason revoked "
                        "(expiry:sql, expiry:redis)")):
        command = commands.add_parser(name, help=text)
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("username", nargs="?")
        who.add_argument("--user-id", type=_user_id, metavar="ID",
                         help="name the user by id instead (one removed already)")
    commands.add_parser("list", help="list users")
    commands.add_parser("seed-demo", help="add alice/alice and admin/admin (development only)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.ini)
    with bootstrap(args.ini) as env:
        request = env["request"]
        expiry = env["registry"].session_expiry
        try:
            if args.command in SESSION_COMMANDS and not expiry.policy.shared_store:
                raise UsageError(
                    f"{args.command} needs a shared store (session.type = expiry:sql or "
                    "expiry:redis): with expiry:memory the "
                    "sessions live inside the server process, which this script cannot reach; "
                    "see and end them at /admin/sessions (filter by user, then \"Revoke every "
                    "session\")")
            with request.tm:  # commits the change before any session is touched
                target = run(args, request.dbsession, env["registry"].settings)
            if target is not None:
                return settle(args, target, expiry)
        except UsageError as error:
            print(f"session-users: {error}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            expiry.store.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
