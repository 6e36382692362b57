"""Errors the user fixes by changing the configuration.

`sslkit-train` prints their message alone, without a traceback, and exits with status 2;
the message names the key to change and the values it accepts.
"""


class ConfigError(ValueError):
    """A configuration that cannot run: wrong shapes, impossible sizes, missing device."""


class NonFiniteLossError(ConfigError, FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""
