"""The Redis store's password throttle: each key's failures in one hash (one slot), claimed
by compare-and-set, so two app servers never both take the last free try."""
from __future__ import annotations

import logging

from ...throttle import Failures, claim, released
from ..contract import StoreUnavailable
from .connection import unavailable

log = logging.getLogger("session_expiry.stores.redis")

#: Claims lost in a row to other app servers before this one gives up: a 503 (better a
#: refusal than an uncounted try).
MAX_CLAIM_ATTEMPTS = 20


def _failures(value: str | None) -> Failures | None:
    if not value:
        return None
    count, last = value.split(":")
    return Failures(int(count), int(last))


def _text(failures: Failures | None) -> str:
    return "" if failures is None else f"{failures.count}:{failures.last}"


class Throttling:
    """Password tries claimed and released (``SessionStore.claim_try``, ``release_try``)."""

    @unavailable
    def claim_try(self, keys, now):
        names = sorted({key.name for key in keys})
        for _ in range(MAX_CLAIM_ATTEMPTS):
            read = dict(zip(names, self.redis.client.hmget(self.layout.failures, names),
                            strict=True))
            answer, stored = claim(keys, {name: _failures(value)
                                          for name, value in read.items()}, now)
            if not stored or self._swap(read, {name: _text(kept)
                                               for name, kept in stored.items()}):
                return answer
        raise StoreUnavailable("Redis: a password try could not be counted; the claim kept "
                               "losing to other app servers")

    @unavailable
    def release_try(self, keys):
        names = sorted({key.name for key in keys})
        for _ in range(MAX_CLAIM_ATTEMPTS):
            read = dict(zip(names, self.redis.client.hmget(self.layout.failures, names),
                            strict=True))
            kept = {key.name: _text(released(key, _failures(read[key.name]))) for key in keys}
            if self._swap(read, kept):
                return
        log.warning("password tries: a right password's claim was not given back; the "
                    "release kept losing to other app servers")

    @unavailable
    def forget_failures(self, now: int) -> int:
        return self.redis.run("forget", [self.layout.failures, self.layout.failures_by_last],
                              [now - self.policy.throttle_forget_after])

    def _swap(self, read: dict, written: dict) -> bool:
        """Write ``written`` if the failures are still as ``read``."""
        names = list(written)
        return bool(self.redis.run(
            "claim", [self.layout.failures, self.layout.failures_by_last],
            [len(names), *names, *(read[name] or "" for name in names),
             *(written[name] for name in names)]))
