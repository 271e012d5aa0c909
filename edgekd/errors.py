"""User-facing errors.

Anything a user can cause (a bad file, a bad config value, a missing dependency) is raised as
`EdgekdError` with a message that names the thing, what was wrong and how to fix it. The CLI prints
these without a traceback; every other exception is a bug and keeps its traceback.
"""


class EdgekdError(Exception):
    """An error caused by user input or environment, with an actionable message."""


class ConfigError(EdgekdError):
    """A config file, recipe, target or `--set` override is invalid."""


class DataError(EdgekdError):
    """Input audio or corpus layout is unusable."""


class GateError(EdgekdError):
    """A release gate refused to go on (the teacher gate, before any student is trained)."""
