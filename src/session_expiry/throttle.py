"""Password throttling, decided: how long a guesser waits, as plain functions of the counts.

Every password check (the host app's sign-in, the add-on's re-authentication) is
counted under a few keys: the account, the client's address and, for a
re-authentication, the session. A key's failures in a row decide its wait: the
first ``free_tries`` cost nothing, then each failure doubles the wait, from
``FIRST_DELAY`` up to ``max_delay`` (OWASP: slow the guesser down, do not lock
the owner out for long). Failures older than ``forget_after`` are forgotten.

A try is counted *before* the password is checked (the store claims it
atomically, for every key at once), and given back when the password was
right: a hundred guesses sent at once are a hundred tries, not one.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import ip_network

#: The password checks counted (for logs and metrics): a sign-in, a re-authentication.
SIGN_IN, REAUTH = "sign_in", "reauth"
CHECKS = (SIGN_IN, REAUTH)
#: What a try is counted under; a session's count never makes anyone wait.
ACCOUNT, ADDRESS, SESSION = "account", "address", "session"
#: The scopes that can make a check wait (a 429 names one of them).
WAITING_SCOPES = (ACCOUNT, ADDRESS)

#: The wait after the first failure past the free tries (seconds); doubled by each after it.
FIRST_DELAY = 15
#: A client's address gets this many times the account's free tries: an office behind one
#: address has many people who mistype.
ADDRESS_FACTOR = 10
#: What a re-authentication of a session fails before the session is ended, by default.
REAUTH_MAX_FAILURES = 5


@dataclass(frozen=True, slots=True)
class Failures:
    """A key's failed tries in a row, and when the last was counted (whole seconds)."""

    count: int
    last: int


@dataclass(frozen=True, slots=True)
class Rule:
    """How one kind of key is throttled."""

    free_tries: int
    max_delay: int
    forget_after: int

    def current(self, failures: Failures | None, now: int) -> Failures | None:
        """``failures`` as they count at ``now``: None once forgotten."""
        if failures is None or now - failures.last >= self.forget_after:
            return None
        return failures

    def delay(self, count: int) -> int:
        """Seconds to wait after ``count`` failures in a row."""
        if count < self.free_tries:
            return 0
        # The exponent is capped first: 2 ** a-million is not computed for a stubborn guesser.
        return min(self.max_delay, FIRST_DELAY << min(count - self.free_tries, 32))

    def wait(self, failures: Failures | None, now: int) -> int:
        """Seconds from ``now`` until the next try may be made; 0: now."""
        failures = self.current(failures, now)
        if failures is None:
            return 0
        delay = self.delay(failures.count)
        # Never longer than the delay itself: an app server whose clock is behind another's
        # (a farm) does not make anyone wait for the difference.
        return min(delay, max(0, failures.last + delay - now))

    def counted(self, failures: Failures | None, now: int) -> Failures:
        """``failures`` with one more try counted at ``now``."""
        failures = self.current(failures, now)
        return Failures((failures.count if failures else 0) + 1, now)


@dataclass(frozen=True, slots=True)
class Key:
    """One key a try is counted under: what it names (``scope``, for logs and metrics), its
    hashed name in the store, and its rule."""

    scope: str  # ACCOUNT, ADDRESS or SESSION
    name: str
    rule: Rule


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming a try answered: the wait (0: the try is counted and may go ahead) and,
    when throttled, the scope that is; the counts after the claim, by key name."""

    wait: int
    scope: str | None
    counts: dict[str, int]

    @property
    def allowed(self) -> bool:
        return self.wait == 0


def claim(keys: tuple[Key, ...], failures: dict[str, Failures | None],
          now: int) -> tuple[Claim, dict[str, Failures]]:
    """Decide a claim from every key's failures as stored: the answer, and what to store.

    Throttled (some key must wait): nothing is counted, nothing stored. Else each
    key counts one more try.
    """
    waits = [(key.rule.wait(failures.get(key.name), now), key.scope) for key in keys]
    wait, scope = max(waits, default=(0, None))
    if wait:
        counts = {key.name: (failures.get(key.name) or Failures(0, 0)).count for key in keys}
        return Claim(wait, scope, counts), {}
    stored = {key.name: key.rule.counted(failures.get(key.name), now) for key in keys}
    return Claim(0, None, {name: kept.count for name, kept in stored.items()}), stored


def released(key: Key, failures: Failures | None) -> Failures | None:
    """A key's failures after the password was right (None: none kept).

    The account's and the session's run of failures is over. The address gives back
    the one try claimed for this check and keeps the rest: someone else behind it
    may be guessing.
    """
    if key.scope != ADDRESS or failures is None or failures.count <= 1:
        return None
    return Failures(failures.count - 1, failures.last)


def key_name(scope: str, value: str) -> str:
    """The name a key is stored under: a hash, so the store lists no user name or address."""
    return hashlib.sha256(f"{scope}:{value}".encode("utf-8", "surrogateescape")).hexdigest()


def account_value(name: str) -> str:
    """The account a user name counts as: case and surrounding spaces do not make another."""
    return name.strip().casefold()


def address_value(address: str | None) -> str:
    """The address a client counts as: IPv6 clients by their /64 (one host has them all)."""
    if not address:
        return "unknown"
    network = ip_network(address, strict=False)
    if network.version == 6:
        network = network.supernet(new_prefix=64)
    return str(network.network_address)


def keys_for(policy, *, account: str, address: str | None,
             session: str | None = None) -> tuple[Key, ...]:
    """The keys a password check counts under, with their rules from ``policy``."""
    account_rule = Rule(policy.throttle_free_tries, policy.throttle_max_delay,
                        policy.throttle_forget_after)
    address_rule = Rule(policy.throttle_free_tries * ADDRESS_FACTOR, policy.throttle_max_delay,
                        policy.throttle_forget_after)
    keys = [Key(ACCOUNT, key_name(ACCOUNT, account_value(account)), account_rule),
            Key(ADDRESS, key_name(ADDRESS, address_value(address)), address_rule)]
    if session is not None:
        # Counted only: ``reauth_max_failures`` in a row end the session (no wait of its own).
        keys.append(Key(SESSION, key_name(SESSION, session),
                        Rule(policy.reauth_max_failures + 1, 0, policy.throttle_forget_after)))
    return tuple(keys)
