"""What the CLI reports as a user's mistake rather than as a failure."""


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


class EnvironmentProblem(Exception):
    """The machine, not the user's request, stands in the way (a port in use, a full disk): one line, exit 1."""
