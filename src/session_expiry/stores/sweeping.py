"""What every store's sweep shares: its result, the subscribers' report, the sweep thread."""
from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..events import SessionEnded

log = logging.getLogger("session_expiry.stores")

OnEnd = Callable[[SessionEnded], None]

@dataclass
class SweepResult:
    """What one ``sweep`` did."""

    ended: Counter = field(default_factory=Counter)  # by reason
    notified: int = 0
    pruned: int = 0
    seconds: float = 0.0

    @property
    def total_ended(self) -> int:
        return sum(self.ended.values())

    def add(self, other: SweepResult) -> None:
        self.ended.update(other.ended)
        self.notified += other.notified
        self.pruned += other.pruned

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.ended.items()))
        return (f"ended={self.total_ended}" + (f" ({reasons})" if reasons else "")
                + f" notified={self.notified} pruned={self.pruned} in {self.seconds:.2f}s")


def report(on_end: OnEnd, event: SessionEnded) -> None:
    """Hand ``event`` to the subscribers; one that raises is logged, never fatal."""
    try:
        on_end(event)
    except Exception:
        log.exception("reporting the end of session %s failed", event.session_key[:12])


class SweepsInThread:
    """``start`` for a shared store (SQL, Redis), whose sweep a farm usually leaves to
    ``session-sweeper``: a thread in this process instead (``sweep_interval``)."""

    _sweeper: SweepThread | None

    def start(self, interval: float, batch: int = 500, observe=None) -> None:
        """Sweep every ``interval`` seconds in a daemon thread until ``close``."""
        def sweep():
            result = self.sweep(int(self.clock()), batch)
            if result.total_ended or result.notified or result.pruned:
                log.info("swept: %s", result.summary())
            return result

        if self._sweeper is None:
            self._sweeper = SweepThread(sweep, interval, observe)


class SweepThread:
    """A daemon thread that calls ``sweep`` every ``every`` seconds until :meth:`stop`,
    handing each ``SweepResult`` to ``observe`` (the metrics)."""

    def __init__(self, sweep: Callable[[], SweepResult], every: float,
                 observe: Callable[[SweepResult], object] | None = None):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sweep, every, observe),
                                        name="session-expiry-sweep", daemon=True)
        self._thread.start()

    def _run(self, sweep, every, observe):
        while not self._stop.wait(every):
            try:
                result = sweep()
                if observe is not None:
                    observe(result)
            except Exception:  # keep sweeping; one bad run must not stop it
                log.exception("session sweep failed")

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)
