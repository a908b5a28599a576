"""The one error type a user can cause. The CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a config value, a missing file, an impossible request.

    Raised before anything is written. ``str(err)`` is the whole message, one line,
    naming the field or file at fault.
    """
