"""Errors the user fixes by changing the configuration, and the preemption stop.

`sslkit-train` prints their message alone, without a traceback; the message names the
key to change and the values it accepts.
"""


class ConfigError(ValueError):
    """A configuration that cannot run: wrong shapes, impossible sizes, missing device."""


class NonFiniteLossError(ConfigError, FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""


class Preempted(Exception):
    """Training stopped on SIGTERM / SIGUSR1 after writing a checkpoint.

    `sslkit-train` then exits with status 255, as submitit's own handler does after a
    preemption (`sys.exit(-1)`); relaunching the same command resumes the run."""

    exit_code = 255
