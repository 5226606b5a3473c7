"""Load: many clients for a while against two app servers and two sweepers on one PostgreSQL.

``locust`` (tests/load/locustfile.py, its own process: it monkeypatches with gevent)
drives LOAD_USERS simulated people for LOAD_SECONDS against both servers at once;
each signs in, clicks, writes draft values into its session, reads its status,
sometimes idles past its deadline, signs out or signs in again. Afterwards the
database and the clients' logs must agree:

- no answer was a 5xx, and locust counted no failure;
- every draft write acknowledged with a 200 is in its session's data (open sessions,
  at the end and in every snapshot taken while the load ran), or was made before
  its session ended;
- no session ended early: not before its stored deadline, not before the deadline
  the server itself had told the client, and for ``logged_out`` only when its client
  signed out; and a client coming back after the stated deadline is refused;
- exactly one event row per ended session, none for an open one, every one notified;
- locust stopped by itself within its time bound; servers and sweepers ran throughout.

The 10-second version runs in ``make test``; the full run (``make load``)::

    LOAD_SECONDS=60 LOAD_USERS=200 .venv/bin/pytest tests/load -q -s
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from session_expiry_demo.models import User
from tests.conftest import migrate
from tests.farm.conftest import BIN, wait_for_port, write_ini
from tests.postgres import free_port

HERE = Path(__file__).resolve().parent
LOAD_SECONDS = int(os.environ.get("LOAD_SECONDS", "10"))
LOAD_USERS = int(os.environ.get("LOAD_USERS", "200"))
#: Load accounts (``load001`` ...), shared by the simulated people, as people share devices.
ACCOUNTS = 50
PASSWORD = "load-password"
#: Short enough that idling past the deadline happens many times in a run.
IDLE, ABSOLUTE, WARN, TOUCH = 5, 8, 1, 1
SWEEP_EVERY = "1s"
#: How long locust lets a running task finish once the run time is up.
STOP_TIMEOUT = 5
#: Locust's own start-up and shutdown, beyond the run time and the stop timeout.
LOCUST_SLACK = 15
#: A session past its deadline is ended within this many seconds (two sweepers, each 1s).
SWEEP_LAG_LIMIT = 5
_databases = itertools.count(1)

pytestmark = pytest.mark.timeout(LOAD_SECONDS + STOP_TIMEOUT + LOCUST_SLACK + 120)


# -- the farm -------------------------------------------------------------------------

def create_accounts(url: str) -> None:
    """``load001`` ... with one password, hashed with Argon2's cheapest parameters.

    The verifier reads the parameters from the hash, so a sign-in costs well under a
    millisecond instead of ~0.1 s of CPU: sign-ins stay a modest share of the load.
    """
    fast = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    engine = sa.create_engine(url)
    with Session(engine) as db, db.begin():
        db.add_all(User(username=f"load{n:03d}", password_hash=fast, is_admin=False)
                   for n in range(1, ACCOUNTS + 1))
    engine.dispose()


def server_ini(directory: Path, url: str, port: int) -> Path:
    """The farm's ini, and room in waitress for every client's keep-alive connection:
    with its default ``connection_limit`` of 100, the clients past the 100th wait to
    connect (8.6 s in a trial) and the farm serves half the load."""
    ini = write_ini(directory, url, port, idle_timeout=f"{IDLE}s",
                    absolute_timeout=f"{ABSOLUTE}s", warn_before=f"{WARN}s",
                    touch_interval=f"{TOUCH}s")
    text = ini.read_text()
    listen = f"listen = 127.0.0.1:{port}"
    assert listen in text, text
    ini.write_text(text.replace(listen, listen + "\nconnection_limit = 2000", 1))
    return ini


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Farm:
    url: str
    directory: Path
    hosts: list[str]
    servers: list[Process] = field(default_factory=list)
    sweepers: list[Process] = field(default_factory=list)

    def all(self) -> list[Process]:
        return self.servers + self.sweepers


def start(name: str, argv: list[str], directory: Path) -> Process:
    log = directory / f"{name}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the process
        popen = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Process(name, popen, log)


def stop(processes: list[Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=10)


@pytest.fixture
def farm(tmp_path, postgres):
    url = postgres.create_database(f"load_{next(_databases)}")
    migrate(url)
    create_accounts(url)
    farm = Farm(url, tmp_path, [])
    try:
        for number in (1, 2):
            port = free_port()
            ini = server_ini(tmp_path, url, port)
            process = start(f"server{number}", [str(BIN / "pserve"), str(ini)], tmp_path)
            farm.servers.append(process)
            try:
                wait_for_port(port, process.popen)
            except RuntimeError as error:
                raise RuntimeError(f"{error}\n{process.text()[-3000:]}") from error
            farm.hosts.append(f"http://127.0.0.1:{port}")
        sweeper_ini = server_ini(tmp_path, url, 0)
        for number in (1, 2):
            farm.sweepers.append(start(f"sweeper{number}", [
                str(BIN / "session-sweeper"), str(sweeper_ini), "--every", SWEEP_EVERY],
                tmp_path))
        yield farm
    finally:
        stop(farm.sweepers)
        stop(farm.servers)


class Snapshots(threading.Thread):
    """Reads every open session's data once a second while the load runs.

    Keeps, per session, the last snapshot it was open in: when it was taken and the
    draft values it held. Draft fields are only ever added, so that one snapshot
    must hold every write acknowledged before it was taken.
    """

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url)
        self.halt = threading.Event()
        self.latest: dict[str, tuple[float, dict]] = {}
        self.taken = 0
        self.errors: list[str] = []

    def run(self):
        query = sa.text("SELECT key, data FROM sessions")  # the open ones
        while not self.halt.is_set():
            before = time.time()  # the statement's snapshot is taken after this moment
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(query).all()
            except sa.exc.SQLAlchemyError as error:
                self.errors.append(f"{before:.3f}: {error}")
            else:
                for key, data in rows:
                    drafts = {k: v for k, v in (data or {}).items() if k.startswith("draft_")}
                    self.latest[key] = (before, drafts)
                self.taken += 1
            self.halt.wait(max(0.0, 1.0 - (time.time() - before)))

    def stop(self):
        self.halt.set()
        self.join(timeout=30)
        self.engine.dispose()


# -- locust -----------------------------------------------------------------------------

@dataclass
class LocustRun:
    returncode: int | None
    seconds: float
    bound: float
    output: str
    stats: list[dict]
    failures: list[dict]
    exceptions: list[dict]
    records: list[dict]


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_locust(farm: Farm, users: int, seconds: int) -> LocustRun:
    directory = farm.directory / "locust"
    directory.mkdir()
    log = directory / "requests.jsonl"
    output = directory / "locust.out"
    argv = [str(BIN / "locust"), "-f", str(HERE / "locustfile.py"), "--headless",
            "-u", str(users), "-r", str(max(1, users // 2)), "-t", f"{seconds}s",
            "--stop-timeout", str(STOP_TIMEOUT), "--host", farm.hosts[0],
            "--csv", str(directory / "stats"), "--only-summary", "--loglevel", "WARNING",
            "--exit-code-on-error", "1"]
    env = {**os.environ, "LOAD_HOSTS": " ".join(farm.hosts), "LOAD_LOG": str(log),
           "LOAD_ACCOUNTS": str(ACCOUNTS), "LOAD_PASSWORD": PASSWORD,
           "PYTHONUNBUFFERED": "1"}
    bound = seconds + STOP_TIMEOUT + LOCUST_SLACK
    started = time.monotonic()
    with output.open("wb") as out:
        process = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
        try:
            returncode = process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            returncode = None  # it did not stop by itself: stop it, and fail below
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    elapsed = time.monotonic() - started
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] \
        if log.exists() else []
    return LocustRun(returncode, elapsed, bound, output.read_text(errors="replace"),
                     read_csv(directory / "stats_stats.csv"),
                     read_csv(directory / "stats_failures.csv"),
                     read_csv(directory / "stats_exceptions.csv"), records)


# -- the database at the end ---------------------------------------------------------------

def epoch(column: str) -> str:
    return f"extract(epoch FROM {column})::float8 AS {column}"


@dataclass
class Database:
    sessions: dict[str, dict]
    events: list[dict]
    users: dict[str, str]  # user id -> name

    @property
    def ended(self) -> dict[str, dict]:
        return {k: s for k, s in self.sessions.items() if s["ended_at"] is not None}

    @property
    def still_open(self) -> dict[str, dict]:
        return {k: s for k, s in self.sessions.items() if s["ended_at"] is None}


def read_database(url: str) -> Database:
    engine = sa.create_engine(url)
    record = ", ".join(epoch(c) for c in ("created", "last_seen", "idle_deadline",
                                          "absolute_deadline"))
    with engine.connect() as conn:
        # Open sessions, then the ended ones' tombstones (their ``ended`` events).
        sessions = {row["key"]: dict(row) for row in conn.execute(sa.text(
            f"SELECT key, user_id, data, NULL AS end_reason, {record}, "  # noqa: S608
            "NULL::float8 AS ended_at FROM sessions UNION ALL "
            f"SELECT session_key, user_id, NULL, reason, {record}, "
            "extract(epoch FROM at)::float8 FROM session_events WHERE kind = 'ended'"
        )).mappings().all()}
        events = [dict(row) for row in conn.execute(sa.text(
            "SELECT session_key, user_id, kind, reason, duration, "
            "extract(epoch FROM at)::float8 AS at, "
            "id NOT IN (SELECT event_id FROM session_outbox) AS notified FROM session_events"
        )).mappings().all()]
        users = {str(row.id): row.username for row in conn.execute(
            sa.text("SELECT id, username FROM users"))}
    engine.dispose()
    return Database(sessions, events, users)


# -- the checks ----------------------------------------------------------------------------

REQUEST_KINDS = ("login_page", "login", "login_again", "page", "notes", "draft", "tab",
                 "status", "logout", "after_idle")
WRITE_KINDS = ("draft", "tab")
TIMEOUTS = ("idle_timeout", "absolute_timeout")


def when(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


class Checks:
    def __init__(self):
        self.problems: list[str] = []
        self.figures: dict = {}

    def fail(self, message: str) -> None:
        self.problems.append(message)


def check_locust(run: LocustRun, users: int, seconds: int, checks: Checks) -> None:
    if run.returncode is None:
        checks.fail(f"locust did not stop by itself within {run.bound:.0f}s (stopped after "
                    f"{run.seconds:.1f}s)")
    elif run.returncode != 0:
        checks.fail(f"locust exited with {run.returncode}:\n{run.output[-3000:]}")
    if run.seconds > run.bound:
        checks.fail(f"locust took {run.seconds:.1f}s, more than its bound {run.bound:.0f}s")
    total = next((row for row in run.stats if row["Name"] == "Aggregated"), None)
    if total is None:
        checks.fail(f"locust wrote no Aggregated stats row; output:\n{run.output[-3000:]}")
        return
    requests = int(total["Request Count"])
    failures = int(total["Failure Count"])
    checks.figures.update({
        "locust_seconds": round(run.seconds, 1), "requests": requests, "failures": failures,
        "requests_per_second": round(float(total["Requests/s"]), 1),
        "p50_ms": total["50%"], "p95_ms": total["95%"], "p99_ms": total["99%"],
        "max_ms": round(float(total["Max Response Time"])),
        "by_kind": {row["Name"]: int(row["Request Count"]) for row in run.stats
                    if row["Name"] != "Aggregated"},
    })
    if failures:
        shown = "\n".join(f"  {row['Occurrences']}x {row['Method']} {row['Name']}: "
                          f"{row['Error'][:300]}" for row in run.failures[:20])
        checks.fail(f"locust counted {failures} failed requests:\n{shown}")
    for row in run.exceptions[:10]:
        checks.fail(f"exception in the locust users ({row.get('Count')}x): "
                    f"{row.get('Message')} {row.get('Traceback', '')[-500:]}")
    # The CSV is written when the run time is up; the summary printed at the exit also
    # counts the requests of the tasks that were let finish (--stop-timeout).
    summary = re.search(r"^\s+Aggregated\s+(\d+)\s+(\d+)\(", run.output, re.MULTILINE)
    if summary is None:
        checks.fail(f"locust printed no summary:\n{run.output[-3000:]}")
        return
    final_requests, final_failures = int(summary.group(1)), int(summary.group(2))
    checks.figures.update({"requests": final_requests, "failures": final_failures})
    if final_failures:
        checks.fail(f"locust's summary counts {final_failures} failed requests")
    logged = sum(1 for r in run.records if r["k"] in REQUEST_KINDS)
    if logged != final_requests:
        checks.fail(f"locust counted {final_requests} requests but the clients logged {logged}")
    # Enough load that the checks below are not vacuous.
    if final_requests < users * seconds * 0.3:
        checks.fail(f"only {final_requests} requests from {users} users in {seconds}s "
                    f"({final_requests / seconds:.0f}/s): the farm or locust could not keep up")


def check_answers(records: list[dict], checks: Checks) -> None:
    requests = [r for r in records if r["k"] in REQUEST_KINDS]
    errors = [r for r in requests if r["st"] >= 500 or r["st"] == 0]
    checks.figures["responses_5xx"] = sum(1 for r in requests if r["st"] >= 500)
    checks.figures["statuses"] = dict(sorted(Counter(r["st"] for r in requests).items()))
    for r in errors[:20]:
        checks.fail(f"{r['st']} for {r['m']} {r['p']} on :{r['srv']} at {when(r['t0'])} "
                    f"(user {r['u']}): {r['problem']}")
    if len(errors) > 20:
        checks.fail(f"... and {len(errors) - 20} more 5xx or connection errors")
    shown = {id(r) for r in errors}
    wrong = [r for r in requests if r.get("problem") and id(r) not in shown]
    for r in wrong[:20]:
        checks.fail(f"wrong answer to user {r['u']} ({r['a']}) {r['m']} {r['p']} on "
                    f":{r['srv']} at {when(r['t0'])}: {r['problem']}")
    if len(wrong) > 20:
        checks.fail(f"... and {len(wrong) - 20} more wrong answers")
    for r in requests:
        if r.get("exp") is not None and not 0 <= r["exp"] <= IDLE:
            checks.fail(f"Session-Expires-In: {r['exp']} to user {r['u']} for {r['m']} "
                        f"{r['p']} at {when(r['t0'])}: not within 0..{IDLE}")
    for r in records:
        if r["k"] in ("login_failed", "write_odd"):
            checks.fail(f"user {r['u']}: {r['k']}: {r}")


def deadline_promises(records: list[dict]) -> dict[str, tuple[float, dict]]:
    """Per session: the latest deadline the server stated, as a lower bound, and the answer.

    An answer sent at ``t0`` saying ``Session-Expires-In: R`` (whole seconds left, rounded
    down) was computed at ``now >= t0``: the deadline was then ``>= now + R >= floor(t0) +
    R``, and deadlines never move back.
    """
    promises: dict[str, tuple[float, dict]] = {}
    for r in records:
        if r["k"] in REQUEST_KINDS and r.get("exp") is not None and r.get("s2"):
            bound = math.floor(r["t0"]) + r["exp"]
            if bound > promises.get(r["s2"], (-1, None))[0]:
                promises[r["s2"]] = (bound, r)
    return promises


def check_sign_ins(records, db: Database, checks: Checks) -> None:
    """Every session in the database is one a client signed in to, as the right user."""
    signed_in = {r["s"]: r for r in records if r["k"] == "signed_in"}
    for key, r in signed_in.items():
        session = db.sessions.get(key)
        if session is None:
            checks.fail(f"user {r['u']} signed in to session {key[:12]} at {when(r['t1'])}, "
                        "which the database does not hold")
        elif db.users.get(session["user_id"]) != r["a"]:
            checks.fail(f"session {key[:12]} of user {r['u']} ({r['a']}) belongs to "
                        f"{db.users.get(session['user_id'])!r} in the database")
    for key in db.sessions.keys() - signed_in.keys():
        checks.fail(f"session {key[:12]} is in the database but no client signed in to it")
    checks.figures["sign_ins"] = len(signed_in)


def check_ends(records, db: Database, finished_at: float, checks: Checks) -> None:
    """No session ended before its deadline, nor before the deadline its client was told;
    ``logged_out`` only when its client signed out; none left open long past its deadline."""
    promises = deadline_promises(records)
    signed_out = defaultdict(list)  # session -> the requests that signed it out
    for r in records:
        if r["k"] == "logout" and r.get("s"):
            signed_out[r["s"]].append(r)
        if r["k"] == "login_again" and r.get("before"):
            signed_out[r["before"]].append(r)
    lateness = []
    for key, s in db.ended.items():
        check_deadlines(key, s, checks)
        if s["end_reason"] in TIMEOUTS:
            lateness.append(check_timeout_end(key, s, promises.get(key), checks))
        elif s["end_reason"] == "logged_out":
            outs = signed_out.get(key, [])
            if not any(math.floor(r["t0"]) <= s["ended_at"] <= r["t1"] + 1 for r in outs):
                seen = ", ".join(f"{r['k']} {when(r['t0'])}-{when(r['t1'])}" for r in outs)
                checks.fail(f"session {key[:12]} ended as logged_out at {when(s['ended_at'])},"
                            f" but its client signed out {seen or 'never'}")
        else:
            checks.fail(f"session {key[:12]} ended for {s['end_reason']!r} at "
                        f"{when(s['ended_at'])}: nobody revoked it or ended it from another "
                        "session")
    for key, s in db.still_open.items():
        check_deadlines(key, s, checks)
        late = finished_at - min(s["idle_deadline"], s["absolute_deadline"])
        if late > SWEEP_LAG_LIMIT:
            checks.fail(f"session {key[:12]} is still open {late:.0f}s after its deadline "
                        f"with two sweepers running every {SWEEP_EVERY}")
    too_late = [x for x in lateness if x > SWEEP_LAG_LIMIT]
    if too_late:
        checks.fail(f"{len(too_late)} sessions ended more than {SWEEP_LAG_LIMIT}s after their "
                    f"deadline (worst {max(too_late):.0f}s)")
    lateness.sort()
    checks.figures["end_after_deadline_s"] = {
        "median": lateness[len(lateness) // 2] if lateness else None,
        "max": lateness[-1] if lateness else None}


def check_timeout_end(key: str, s: dict, promise: tuple | None, checks: Checks) -> float:
    """A session that timed out did so at or after its deadline and the one its client
    was told; how long after its deadline it ended."""
    reason, ended_at = s["end_reason"], s["ended_at"]
    deadline = min(s["idle_deadline"], s["absolute_deadline"])
    due = "absolute_timeout" if s["absolute_deadline"] <= s["idle_deadline"] else "idle_timeout"
    if ended_at < deadline:
        checks.fail(f"session {key[:12]} ended EARLY: {reason} at {when(ended_at)}, before "
                    f"its deadline {when(deadline)} (last seen {when(s['last_seen'])}, "
                    f"created {when(s['created'])})")
    elif reason != due:
        checks.fail(f"session {key[:12]} ended for {reason} but its first deadline was the "
                    f"{due} one (idle {when(s['idle_deadline'])}, absolute "
                    f"{when(s['absolute_deadline'])})")
    if promise and ended_at < promise[0]:
        r = promise[1]
        checks.fail(f"session {key[:12]} ended EARLY: {reason} at {when(ended_at)}, but the "
                    f"server told user {r['u']} at {when(r['t0'])} ({r['m']} {r['p']} on "
                    f":{r['srv']}) that {r['exp']}s were left, a deadline of "
                    f"{when(promise[0])} or later")
    return ended_at - deadline


def check_deadlines(key: str, s: dict, checks: Checks) -> None:
    if s["idle_deadline"] != s["last_seen"] + IDLE:
        checks.fail(f"session {key[:12]}: idle deadline {when(s['idle_deadline'])} is not "
                    f"last seen {when(s['last_seen'])} + {IDLE}s")
    if s["absolute_deadline"] != s["created"] + ABSOLUTE:
        checks.fail(f"session {key[:12]}: absolute deadline {when(s['absolute_deadline'])} "
                    f"is not created {when(s['created'])} + {ABSOLUTE}s")


def check_expires_header(records, db: Database, checks: Checks) -> None:
    """Every answer served to a session that was still open says how long is left: a 200
    without ``Session-Expires-In`` is one whose session ended while it was served."""
    served_as_ended = 0
    for r in records:
        if r["k"] not in ("page", "notes", "draft", "tab", "status") or r["st"] != 200 \
                or r.get("exp") is not None or not r.get("s"):
            continue
        if r["k"] == "status" and r.get("state") != "active":
            continue
        s = db.sessions.get(r["s"])
        if s is None:
            continue  # reported by check_sign_ins
        if s["ended_at"] is None or s["ended_at"] > r["t1"] or r["k"] == "status":
            checks.fail(f"{r['m']} {r['p']} on :{r['srv']} answered user {r['u']} 200 at "
                        f"{when(r['t1'])} without Session-Expires-In, but session "
                        f"{r['s'][:12]} was open then (ended "
                        f"{when(s['ended_at']) if s['ended_at'] else 'never'})")
        else:
            served_as_ended += 1
    checks.figures["answers_200_as_the_session_ended"] = served_as_ended


def check_what_clients_were_told(records, db: Database, checks: Checks) -> None:
    """A client told its session ended heard the reason the database holds; one that
    came back after the deadline it was told was refused; a status poll half way
    through that time still found the session alive."""
    for r in records:
        if r["k"].startswith("ended_seen"):
            session = db.sessions.get(r["s"])
            if session is None:
                continue  # reported by check_sign_ins
            if session["end_reason"] != r["reason"]:
                checks.fail(f"user {r['u']} was told session {r['s'][:12]} ended for "
                            f"{r['reason']!r} at {when(r['t1'])}; the database says "
                            f"{session['end_reason']!r} at "
                            f"{when(session['ended_at']) if session['ended_at'] else '-'}")
            if r["t1"] < r["deadline_at_least"]:
                checks.fail(f"user {r['u']} was told session {r['s'][:12]} was over "
                            f"({r['reason']}, {r['k']}) at {when(r['t1'])}, before the "
                            f"deadline it had been told ({when(r['deadline_at_least'])} or "
                            "later)")
        if r["k"] == "after_idle" and r["st"] == 200:
            checks.fail(f"user {r['u']}: session {r['s'][:12]} still answered 200 at "
                        f"{when(r['t0'])}, after the deadline the server had stated "
                        f"({when(r['deadline_by'])}): it did not end")
    checks.figures["idle_returns"] = sum(1 for r in records if r["k"] == "after_idle")
    checks.figures["ends_seen_by_clients"] = dict(Counter(
        r["reason"] for r in records if r["k"].startswith("ended_seen")))


def check_events(db: Database, checks: Checks) -> None:
    """Exactly one event row per ended session, agreeing with it; none for an open one."""
    by_key = Counter(e["session_key"] for e in db.events)
    for key, count in by_key.items():
        if count > 1:
            checks.fail(f"session {key[:12]} has {count} event rows")
    for key in db.ended.keys() - by_key.keys():
        checks.fail(f"session {key[:12]} ended ({db.ended[key]['end_reason']}) without an "
                    "event row")
    for e in db.events:
        s = db.sessions.get(e["session_key"])
        if s is None or s["ended_at"] is None:
            checks.fail(f"event row for session {e['session_key'][:12]} ({e['reason']}), "
                        "which is open or unknown")
        elif (e["kind"], e["reason"], e["at"], e["duration"]) != (
                "ended", s["end_reason"], s["ended_at"], s["ended_at"] - s["created"]):
            checks.fail(f"event row {e} disagrees with its session: {s['end_reason']} at "
                        f"{s['ended_at']}, created {s['created']}")
        if not e["notified"]:
            checks.fail(f"the end of session {e['session_key'][:12]} ({e['reason']}) was "
                        "never notified")
    checks.figures["event_rows"] = len(db.events)


def check_writes(records, db: Database, snapshots: Snapshots, checks: Checks) -> None:
    """Every draft write acknowledged with a 200 is accounted for.

    A session still open holds it (at the end, and in the last snapshot taken after the
    acknowledgement while the session was open); a session that ended, ended after the
    write was made. ``latest`` is overwritten: it holds the last acknowledged value or a
    later one. An open session holds no value its own requests did not write.
    """
    sent = defaultdict(dict)  # session -> value -> seq
    for r in records:
        if r["k"] == "write_sent" and r.get("s"):
            sent[r["s"]][r["value"]] = r["seq"]
    acked = [r for r in records if r["k"] in WRITE_KINDS and r["st"] == 200]
    checks.figures.update({
        "writes_sent": sum(1 for r in records if r["k"] == "write_sent"),
        "writes_acknowledged": len(acked),
        "writes_in_parallel": sum(1 for r in acked if r["k"] == "tab"),
        # Made while the session was open, answered after it ended (the answer says so:
        # no Session-Expires-In); the data went with the session.
        "writes_acknowledged_as_session_ended": sum(1 for r in acked if r.get("exp") is None),
    })
    latest: dict[str, dict] = {}
    for r in acked:
        key, name = r["s"], "draft_" + r["field"]
        s = db.sessions.get(key)
        if s is None:
            continue  # reported by check_sign_ins
        if s["ended_at"] is not None and math.floor(r["t0"]) > s["ended_at"]:
            checks.fail(f"write {name}={r['value']!r} to session {key[:12]} was acknowledged "
                        f"200 at {when(r['t1'])} (sent {when(r['t0'])}), after the session "
                        f"ended ({s['end_reason']} at {when(s['ended_at'])})")
        if r["field"] == "latest":
            if r["seq"] > latest.get(key, {"seq": -1})["seq"]:
                latest[key] = r
            continue
        if s["ended_at"] is None and (s["data"] or {}).get(name) != r["value"]:
            checks.fail(f"LOST WRITE: user {r['u']} wrote {name}={r['value']!r} to session "
                        f"{key[:12]} on :{r['srv']}, acknowledged 200 at {when(r['t1'])}; "
                        f"the open session holds {(s['data'] or {}).get(name)!r} at the end")
        snapshot = snapshots.latest.get(key)
        if snapshot and r["t1"] < snapshot[0] and snapshot[1].get(name) != r["value"]:
            checks.fail(f"LOST WRITE: {name}={r['value']!r} acknowledged 200 to user {r['u']} "
                        f"at {when(r['t1'])} is missing from session {key[:12]}, still open "
                        f"at {when(snapshot[0])} (it holds {snapshot[1].get(name)!r})")
    check_latest(latest, sent, db, snapshots, checks)
    for key, s in db.still_open.items():
        for name, value in (s["data"] or {}).items():
            if name.startswith("draft_") and value not in sent[key]:
                checks.fail(f"session {key[:12]} holds {name}={value!r}, which no request of "
                            "that session wrote")


def check_latest(latest: dict, sent: dict, db: Database, snapshots: Snapshots,
                 checks: Checks) -> None:
    """The overwritten field holds the last acknowledged value or a later one sent since."""
    for key, r in latest.items():
        s = db.sessions[key]
        seen = [("at the end", s["data"] if s["ended_at"] is None else None)]
        snapshot = snapshots.latest.get(key)
        if snapshot and r["t1"] < snapshot[0]:
            seen.append((f"at {when(snapshot[0])}", snapshot[1]))
        for moment, data in seen:
            if data is None:
                continue
            value = data.get("draft_latest")
            if sent[key].get(value, -1) < r["seq"]:
                checks.fail(f"LOST WRITE: session {key[:12]} holds draft_latest={value!r} "
                            f"{moment}, older than {r['value']!r} acknowledged 200 to user "
                            f"{r['u']} at {when(r['t1'])}")


def check_processes(farm: Farm, alive: dict[str, int | None], checks: Checks) -> Counter:
    """Servers and sweepers ran throughout and logged no error; the notifications they logged."""
    ended_lines = Counter()
    for process in farm.all():
        if alive[process.name] is not None:
            checks.fail(f"{process.name} exited with {alive[process.name]} during the load:\n"
                        f"{process.text()[-2000:]}")
        text = process.text()
        bad = [line for line in text.splitlines()
               if "Traceback" in line or " ERROR " in line or "cannot be reached" in line]
        for line in bad[:10]:
            checks.fail(f"{process.name}: {line[:400]}")
        if bad:
            index = text.find(bad[0])
            checks.fail(f"{process.name} log from its first error:\n{text[index:index + 3000]}")
        ended_lines.update(re.findall(r"session ended: session=(\w+)", text))
    for process in farm.sweepers:
        passes = process.text().count("session-sweeper: ended=")
        checks.figures[f"{process.name}_passes"] = passes
        if passes < LOAD_SECONDS // 2:
            checks.fail(f"{process.name} made {passes} passes in a {LOAD_SECONDS}s run")
        if process.popen.returncode != 0:
            checks.fail(f"{process.name} exited with {process.popen.returncode} on SIGTERM")
    checks.figures["ended_notifications_logged"] = sum(ended_lines.values())
    checks.figures["ended_notifications_repeated"] = sum(
        n - 1 for n in ended_lines.values() if n > 1)
    return ended_lines


def test_load_on_two_servers_and_two_sweepers(farm):
    snapshots = Snapshots(farm.url)
    snapshots.start()
    try:
        run = run_locust(farm, LOAD_USERS, LOAD_SECONDS)
    finally:
        snapshots.stop()
    alive = {process.name: process.popen.poll() for process in farm.all()}
    finished_at = time.time()
    stop(farm.sweepers)
    stop(farm.servers)
    db = read_database(farm.url)

    checks = Checks()
    checks.figures.update({"users": LOAD_USERS, "seconds": LOAD_SECONDS,
                           "snapshots": snapshots.taken})
    check_locust(run, LOAD_USERS, LOAD_SECONDS, checks)
    check_answers(run.records, checks)
    records = run.records
    check_sign_ins(records, db, checks)
    check_ends(records, db, finished_at, checks)
    check_what_clients_were_told(records, db, checks)
    check_expires_header(records, db, checks)
    check_events(db, checks)
    check_writes(records, db, snapshots, checks)
    ended_lines = check_processes(farm, alive, checks)
    missing = [key for key in db.ended if key[:12] not in ended_lines]
    for key in missing[:10]:
        checks.fail(f"session {key[:12]} ended ({db.ended[key]['end_reason']}) but no "
                    "process logged its SessionEnded notification")
    checks.figures.update({"sessions": len(db.sessions),
                           "sessions_open_at_end": len(db.still_open),
                           "sessions_ended": dict(Counter(
                               s["end_reason"] for s in db.ended.values()))})
    for error in snapshots.errors[:5]:
        checks.fail(f"a snapshot of the sessions failed: {error}")
    # Not vacuous: the run did what the checks are about.
    figures = checks.figures
    for name, least in (("writes_acknowledged", LOAD_USERS), ("writes_in_parallel", 1),
                        ("idle_returns", 1), ("snapshots", LOAD_SECONDS // 2)):
        if figures.get(name, 0) < least:
            checks.fail(f"the run had {figures.get(name, 0)} {name}, fewer than {least}")
    for reason in ("idle_timeout", "logged_out"):
        if not figures.get("sessions_ended", {}).get(reason):
            checks.fail(f"no session ended for {reason} in the run")

    print("\nload figures:", json.dumps(figures, indent=1, default=str))
    if checks.problems:
        pytest.fail(f"{len(checks.problems)} problems; the logs, the clients' requests.jsonl "
                    f"and locust's CSV are in {farm.directory} (figures: "
                    f"{json.dumps(figures, default=str)}):\n" + "\n".join(checks.problems[:60]),
                    pytrace=False)
