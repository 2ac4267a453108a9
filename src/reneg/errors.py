"""The exceptions the CLI turns into one line: bad input (exit 2) and a training loop's saved stop (128 + signal)."""

from __future__ import annotations

import signal


class ReNegError(Exception):
    """Bad input from the user (missing file, wrong shape, unknown name, ...).

    The message says what is wrong and what to do; ``reneg`` prints it on one
    line to stderr and exits with status 2, without a traceback.
    """


def why_not_a_file(path) -> str:
    """What a path that should be a readable file is instead: "does not exist", "is a directory", or "is not
    a regular file (a FIFO, a socket or a device)"."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "does not exist"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "is not a regular file (a FIFO, a socket or a device)" if not stat.S_ISREG(mode) else "is a file"


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
