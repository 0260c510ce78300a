"""config.stopping: a SIGTERM stops a long run, and its cleanup runs to the end."""

from __future__ import annotations

import signal
import time
import weakref

import pytest

from config.stopping import SigtermExit


class TestSigtermExit:
    """SIGTERM handling of the throw-away runs (benchmark, stress), in this (main) thread."""

    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exit
    def test_a_stop_swallowed_by_a_finalizer_is_raised_again(self):
        # The handler can run inside a finalizer, where Python prints its exception and goes on.
        stopping = SigtermExit().install()
        try:
            with pytest.raises(SystemExit) as raised:

                class Thing:
                    pass

                thing = Thing()
                weakref.finalize(thing, stopping.stop, signal.SIGTERM, None)
                del thing  # the finalizer's SystemExit is ignored...
                time.sleep(3)  # ...and the next one comes within a second
            assert raised.value.code == 143
        finally:
            stopping.cleanup()
            stopping.restore()

    def test_once_the_cleanup_begins_nothing_interrupts_it(self):
        stopping = SigtermExit().install()
        try:
            with pytest.raises(SystemExit):
                stopping.stop(signal.SIGTERM, None)
            stopping.cleanup()
            time.sleep(1.5)  # the re-raise would have come by now
        finally:
            stopping.cleanup()
            stopping.restore()
        assert signal.getsignal(signal.SIGTERM) is not stopping.stop
