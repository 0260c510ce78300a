"""Stopping a long run with SIGTERM (a timeout, `kill`) so that its ``finally`` still cleans up.

Used by the runs that make throw-away databases and folders: ``manage.py benchmark_identification``
and ``python -m bench.stress``.
"""

from __future__ import annotations

import signal


class SigtermExit:
    """SIGTERM → SystemExit(143), so the run's ``finally`` drops its temporary folder and database.

    Python runs a signal handler between two bytecodes of the main thread, wherever that is. An
    exception raised while a finalizer runs (``weakref.finalize``, ``__del__``) is printed and
    ignored, and the run went on as if never stopped (seen once in the side network's training).
    So once stopped, the exit is raised again every second (SIGALRM) until ``cleanup`` begins.

    Usage: ``stopping = SigtermExit().install()``, then ``try: … finally: stopping.cleanup(); …;
    stopping.restore()``.
    """

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.cleaning = False

    def install(self) -> SigtermExit:
        try:
            for signum in (signal.SIGTERM, signal.SIGALRM):
                self.previous[signum] = signal.signal(signum, self.stop)
        except ValueError:  # not the main thread (e.g. called from a test thread): leave signals alone
            self.previous.clear()
        return self

    def stop(self, signum, frame) -> None:
        if self.cleaning:
            return
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # again in a second, in case this one is swallowed
        raise SystemExit(128 + signal.SIGTERM)

    def cleanup(self) -> None:
        """The run is unwinding: stop raising, so that the cleanup runs to its end."""
        self.cleaning = True
        if self.previous:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
