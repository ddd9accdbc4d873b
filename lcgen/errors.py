"""The exceptions the CLI turns into one red line: :class:`LcgenError` (exit code 1) and
:class:`Interrupted` (Ctrl-C, exit code 130)."""


class LcgenError(Exception):
    """An expected error: bad input, a missing file, a wrong setting.

    The message is shown to the user as it is, so it names the file or value, the problem and
    the fix.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying a line that says what was kept (e.g. "6 of 12 chunks kept in ...;
    rerun to continue"). Still a KeyboardInterrupt for code that calls lcgen."""
