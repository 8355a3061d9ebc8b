"""Errors that mean "the input is wrong", as opposed to a bug in babysit.

Every check at the boundary (CLI, load_data, checkup arguments, search configs) raises a
UsageError whose message names the problem, the value seen and the fix, in one line. The CLI
prints that line and exits with code 2, without a traceback.
"""


class UsageError(ValueError):
    """Bad input from the user: one line that names the problem and the fix."""


class DataError(UsageError):
    """A data set that cannot be used as given (missing file, NaN, bad labels, ...)."""


class ConfigError(UsageError):
    """A malformed or inconsistent configuration (search space, CLI options, ...)."""
