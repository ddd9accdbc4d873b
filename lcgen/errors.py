"""The one exception type the CLI turns into a red line and exit code 1."""


class LcgenError(Exception):
    """An expected error: bad input, a missing file, a wrong setting.

    The message is shown to the user as it is, so it names the file or value, the problem and
    the fix.
    """
