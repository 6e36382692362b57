"""Errors the user fixes by changing the configuration, and the preemption stop.

`sslkit-train` prints their message alone, without a traceback; the message names the
key to change and the values it accepts.
"""


class ConfigError(ValueError):
    """A configuration that cannot run: wrong shapes, impossible sizes, missing device."""


class NonFiniteLossError(ConfigError, FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""


class Preempted(Exception):
    """Training stopped on SIGINT / SIGTERM / SIGUSR1 after writing a checkpoint.

    `sslkit-train` then exits with `exit_code`: 130 after Ctrl-C, 255 after a preemption
    signal, as submitit's own handler does (`sys.exit(-1)`); relaunching the same command
    in the same run directory resumes the run."""

    def __init__(self, message: str, exit_code: int = 255) -> None:
        super().__init__(message)
        self.exit_code = exit_code
