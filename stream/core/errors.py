"""Exception types for user-facing errors.

Every error a user can cause (bad config value, unknown name, malformed data file, tampered artifact)
is raised as a subclass of :class:`TaskstreamError` with a message that names the problem and the fix.
``assert`` is kept for internal invariants only.
"""


class TaskstreamError(Exception):
    """Base class of every error caused by user input or user files."""


class ConfigError(TaskstreamError, ValueError):
    """A configuration value is invalid; the message names the field, the rule and the value."""


class DataError(TaskstreamError):
    """A data source or data file cannot provide what the task needs."""


class ArtifactError(TaskstreamError):
    """An artifact file is missing, truncated, tampered with, or does not match its sidecar."""


class RunDirectoryError(TaskstreamError):
    """A run directory cannot be used for the requested run (for example, its config differs)."""
