"""The exceptions that the CLI turns into clean one-line messages."""


class StackGANError(Exception):
    """A problem the user can fix (bad file, missing dataset, ...): shown as one line, exit 1."""


class UsageError(StackGANError):
    """Options that make no sense together, found by the library: one line, exit 2 (as for a
    bad option value that typer itself rejects). The message names the option(s)."""
