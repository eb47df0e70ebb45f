"""The one exception type that the CLI turns into a clean one-line message."""


class StackGANError(Exception):
    """A problem the user can fix (bad file, missing dataset, ...): shown as one line, exit 1.

    Bad option values are reported with ``typer.BadParameter`` instead, which exits with 2.
    """
