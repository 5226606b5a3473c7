"""The password throttle, decided: waits as plain functions of the counts (no store, no I/O)."""
from __future__ import annotations

import pytest

from session_expiry.settings import Policy
from session_expiry.throttle import (
    ADDRESS_FACTOR,
    FIRST_DELAY,
    Failures,
    Key,
    Rule,
    account_value,
    address_value,
    claim,
    key_name,
    keys_for,
    released,
)

NOW = 1_800_000_000
RULE = Rule(free_tries=3, max_delay=300, forget_after=3600)
POLICY = Policy(secret="x" * 40)


def tries_allowed_in(rule: Rule, seconds: int) -> int:
    """How many wrong passwords a guesser who tries the moment it may gets in ``seconds``."""
    failures, now, tries = None, NOW, 0
    while now < NOW + seconds:
        wait = rule.wait(failures, now)
        if wait:
            now += wait
            continue
        failures = rule.counted(failures, now)
        tries += 1
    return tries


# -- one key's wait -------------------------------------------------------------------------

def test_the_free_tries_cost_nothing():
    assert [RULE.delay(count) for count in range(3)] == [0, 0, 0]


def test_each_failure_past_the_free_tries_doubles_the_wait_up_to_max_delay():
    assert [RULE.delay(count) for count in range(3, 10)] == [15, 30, 60, 120, 240, 300, 300]
    assert RULE.delay(3) == FIRST_DELAY


def test_a_stubborn_guessers_count_does_not_make_the_delay_expensive():
    assert RULE.delay(10**9) == 300


def test_the_wait_runs_from_the_last_failure():
    failures = Failures(count=4, last=NOW)  # delay 30
    assert RULE.wait(failures, NOW) == 30
    assert RULE.wait(failures, NOW + 29) == 1
    assert RULE.wait(failures, NOW + 30) == 0


def test_a_clock_behind_the_one_that_counted_never_waits_longer_than_the_delay():
    # Another app server of the farm, 10 minutes ahead, counted the failure.
    assert RULE.wait(Failures(count=4, last=NOW + 600), NOW) == 30


def test_failures_are_forgotten_after_forget_after():
    failures = Failures(count=50, last=NOW)
    assert RULE.counted(failures, NOW + 3599) == Failures(51, NOW + 3599)  # one more wrong
    assert RULE.counted(failures, NOW + 3600) == Failures(1, NOW + 3600)  # a run of its own


def test_a_guesser_gets_a_few_tries_in_the_first_minute_and_fewer_after():
    assert tries_allowed_in(RULE, 60) == 5  # 3 free, then after 15 s, then after 30 s
    # an hour of guessing at the fastest pace allowed
    # ASVS 4.0.3 V2.2.1 allows at most 100 failures an hour on one account
    assert tries_allowed_in(RULE, 3600) == 18


# -- claims over several keys -----------------------------------------------------------------

ACCOUNT = Key("account", "a" * 64, RULE)
ADDRESS = Key("address", "b" * 64, Rule(30, 300, 3600))


def test_a_claim_counts_one_try_on_every_key_before_the_check():
    answer, stored = claim((ACCOUNT, ADDRESS), {}, NOW)
    assert answer.allowed and answer.wait == 0 and answer.scope is None
    assert stored == {ACCOUNT.name: Failures(1, NOW), ADDRESS.name: Failures(1, NOW)}
    assert answer.counts == {ACCOUNT.name: 1, ADDRESS.name: 1}


def test_a_throttled_claim_counts_nothing_and_names_the_key_that_waits():
    failures = {ACCOUNT.name: Failures(3, NOW - 5), ADDRESS.name: Failures(3, NOW - 5)}
    answer, stored = claim((ACCOUNT, ADDRESS), failures, NOW)
    assert (answer.allowed, answer.wait, answer.scope) == (False, 10, "account")
    assert stored == {}
    assert answer.counts == {ACCOUNT.name: 3, ADDRESS.name: 3}


def test_the_longest_wait_of_the_keys_is_the_answer():
    failures = {ACCOUNT.name: Failures(3, NOW), ADDRESS.name: Failures(35, NOW)}
    answer, _ = claim((ACCOUNT, ADDRESS), failures, NOW)
    assert (answer.wait, answer.scope) == (300, "address")


def test_a_right_password_ends_the_accounts_run_and_gives_the_address_its_try_back():
    assert released(ACCOUNT, Failures(3, NOW)) is None
    assert released(ADDRESS, Failures(7, NOW)) == Failures(6, NOW)
    assert released(ADDRESS, Failures(1, NOW)) is None
    assert released(ADDRESS, None) is None


# -- the keys of a check ----------------------------------------------------------------------

def test_the_account_is_counted_by_its_name_whatever_its_case_or_spaces():
    assert account_value("  Alice ") == account_value("alice") == "alice"
    alice, other = (keys_for(POLICY, account=name, address="192.0.2.1")[0]
                    for name in (" ALICE", "alice"))
    assert alice == other


@pytest.mark.parametrize(("address", "counted_as"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),  # one host holds the whole /64
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
    (None, "unknown"),
])
def test_an_address_is_counted_by_its_host_and_an_ipv6_address_by_its_64(address, counted_as):
    assert address_value(address) == counted_as


def test_the_store_sees_no_user_name_or_address_only_hashes():
    keys = keys_for(POLICY, account="alice", address="192.0.2.7", session="k" * 64)
    assert [key.scope for key in keys] == ["account", "address", "session"]
    for key in keys:
        assert len(key.name) == 64 and int(key.name, 16) >= 0
        assert "alice" not in key.name and "192" not in key.name
    assert keys[0].name == key_name("account", "alice") != key_name("address", "alice")


def test_the_address_gets_ten_times_the_accounts_free_tries():
    account, address = keys_for(POLICY, account="alice", address="192.0.2.7")
    assert address.rule.free_tries == ADDRESS_FACTOR * account.rule.free_tries
    assert account.rule == Rule(POLICY.throttle_free_tries, POLICY.throttle_max_delay,
                                POLICY.throttle_forget_after)


def test_a_sessions_key_only_counts_it_never_makes_it_wait():
    session = keys_for(POLICY, account="alice", address=None, session="k" * 64)[2]
    failures = Failures(POLICY.reauth_max_failures, NOW)
    assert session.rule.wait(failures, NOW) == 0
