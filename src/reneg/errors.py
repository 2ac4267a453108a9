"""The exceptions the CLI turns into one line: bad input (exit 2) and a training loop's saved stop (128 + signal)."""

from __future__ import annotations

import signal


class ReNegError(Exception):
    """Bad input from the user (missing file, wrong shape, unknown name, ...).

    The message says what is wrong and what to do; ``reneg`` prints it on one
    line to stderr and exits with status 2, without a traceback.
    """


class StopRequested(KeyboardInterrupt):
    """Raised after a signal-requested stop has saved its checkpoint: the message says how to resume."""

    def __init__(self, message: str, *, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name

    @classmethod
    def after(cls, signal_name: str, step: int, checkpoint) -> StopRequested:
        """The stop of a loop that saved ``checkpoint`` after ``step``: the one line says how to go on."""
        return cls(f"stopped by {signal_name} after step {step}; the checkpoint is {checkpoint}: rerun with "
                   f"--resume {checkpoint} to go on", signal_name=signal_name)

    @property
    def exit_status(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))
