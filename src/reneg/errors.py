"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class ReNegError(Exception):
    """Bad input from the user (missing file, wrong shape, unknown name, ...).

    The message says what is wrong and what to do; ``reneg`` prints it on one
    line to stderr and exits with status 2, without a traceback.
    """
