"""A training loop that stops between steps on Ctrl-C or SIGTERM (what schedulers send first), saves, and says so
(:class:`reneg.errors.StopRequested`).

The signal only sets a flag; the loop checks it after each optimizer step, so that the checkpoint it then saves
is whole (a step is never cut in half). A second signal stops at once. Another thread may set the same flag (the
UI's Stop button: ``state["signal"] = "the Stop button"``); signals reach the main thread only.
"""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def stop_on_signal(state: dict[str, str | None] | None = None):
    """Within: Ctrl-C and SIGTERM set ``state["signal"]`` (the signal's name); a second one raises at once.
    ``state``: a flag another thread may set too (default: a new one)."""
    state = {"signal": None} if state is None else state
    state.setdefault("signal", None)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield state
        return

    def handle(number, frame):
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signal.Signals(number).name

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
