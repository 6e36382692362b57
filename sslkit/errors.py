"""Errors the user fixes by changing the configuration, and the preemption stop.

`sslkit-train` prints their message alone, without a traceback; the message names the
key to change and the values it accepts.
"""


class ConfigError(ValueError):
    """A configuration that cannot run: wrong shapes, impossible sizes, missing device."""


class NonFiniteLossError(ConfigError, FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""


class Preempted(Exception):
    """Training stopped on a stop signal (sslkit.run.StopSignal: SIGINT, SIGUSR1, SIGTERM,
    submitit's SIGUSR2) after writing a checkpoint; `signal` names it.

    `sslkit-train` prints the message, hands the signal on to the handler it had before
    training (`StopSignal.hand_on`: under submitit, the requeue) and exits with
    `exit_code`: 130 after Ctrl-C, 255 after the others, as submitit's own handler does
    (`sys.exit(-1)`). Relaunching the same command in the same run directory resumes."""

    def __init__(self, message: str, signal: str) -> None:
        super().__init__(message)
        self.signal = signal

    @property
    def exit_code(self) -> int:
        return 130 if self.signal == "SIGINT" else 255
