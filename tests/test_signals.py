"""Ctrl-C, SIGTERM and SIGHUP held where they must not land, and every handler put back
(:mod:`fgsl.signals`, :func:`realtime.interrupts.interrupt_once`), in this process's main thread."""

import signal
import time

import pytest

from fgsl.signals import TERMINATING, interrupts_deferred, restore_handlers
from realtime.interrupts import interrupt_once


def _handlers() -> dict[signal.Signals, object]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def test_a_lost_first_interrupt_does_not_hold_ctrl_c_for_good(capsys):
    """The first Ctrl-C's KeyboardInterrupt can be lost (raised inside a ``__del__``, Python
    only prints it; MediaPipe's ``Image.__del__`` runs every frame). Later ones were then held
    until the block ended: a live camera run could not be stopped but by Ctrl-\\. Now they are
    held for ``hold_s`` only, and said once."""
    before = _handlers()
    with pytest.raises(KeyboardInterrupt), interrupt_once(("SIGINT", *TERMINATING), later="held", hold_s=0.3):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # lost, as in a __del__
        signal.raise_signal(signal.SIGINT)  # in the hold: said
        signal.raise_signal(signal.SIGTERM)  # in the hold: not said again
        time.sleep(0.4)
        signal.raise_signal(signal.SIGINT)  # after it: interrupts again
        pytest.fail("the Ctrl-C after the hold did not interrupt")
    assert capsys.readouterr().err == "held\n"
    assert _handlers() == before


def test_a_signal_while_a_run_finishes_by_itself_is_held_not_raised(capsys):
    """A file's end came first, then Ctrl-C while the run writes its last events (FGSL on the
    CPU takes seconds there): it raised inside the finishing and lost them. After
    ``finishing()`` the first signal is held and said; one after the hold still interrupts
    (a finishing that hangs)."""
    with pytest.raises(KeyboardInterrupt), interrupt_once(("SIGINT", *TERMINATING), later="held",
                                                          hold_s=0.3) as finishing:
        finishing()
        signal.raise_signal(signal.SIGINT)  # held, said
        signal.raise_signal(signal.SIGTERM)  # held, not said again
        time.sleep(0.4)
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the Ctrl-C after the hold did not interrupt")
    assert capsys.readouterr().err == "held\n"


def _interrupted_after(calls: int):
    """A stand-in for ``signal.signal`` that sets the handler, then raises KeyboardInterrupt
    on its ``calls``-th use: a Ctrl-C arriving right after that handler was set."""
    real, used = signal.signal, []

    def set_then_interrupt(sig, handler):
        previous = real(sig, handler)
        used.append(sig)
        if len(used) == calls:
            raise KeyboardInterrupt
        return previous

    return set_then_interrupt


@pytest.mark.parametrize("calls", [1, 2])
def test_a_signal_while_handlers_are_set_or_put_back_leaves_none_behind(monkeypatch, calls):
    """A Ctrl-C landing between two ``signal.signal`` calls raised out of the loop that sets
    or restores them: the signals not yet put back stayed held for good (``docker stop`` did
    nothing). Setting up (calls 1-2 of interrupt_once) and putting back both finish now."""
    before = _handlers()
    try:
        monkeypatch.setattr(signal, "signal", _interrupted_after(calls))
        with pytest.raises(KeyboardInterrupt), interrupt_once(("SIGINT", "SIGTERM")):
            pytest.fail("entered the block")
        monkeypatch.undo()
        assert _handlers() == before

        with interrupt_once(("SIGINT", "SIGTERM")):
            monkeypatch.setattr(signal, "signal", _interrupted_after(calls))
            with pytest.raises(KeyboardInterrupt):
                restore_handlers(dict(before))
            monkeypatch.undo()
            assert _handlers() == before  # both put back, whichever call the interrupt came after
    finally:
        monkeypatch.undo()
        restore_handlers(before)


def test_deferred_signals_come_after_the_block_to_the_handlers_before_it():
    """A Ctrl-C inside :func:`interrupts_deferred` (an import, MediaPipe building its
    landmarker) waits for the block, then reaches the handler that was there before."""
    before = _handlers()
    reached = []
    with interrupt_once(("SIGINT", *TERMINATING)), pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)
            reached.append("block ran to its end")
        pytest.fail("the held signal did not come after the block")
    assert reached == ["block ran to its end"] and _handlers() == before
