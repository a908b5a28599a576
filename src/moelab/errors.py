"""The one error type a user can cause. The CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: a config value, a missing file, an impossible request.

    Raised before anything is written. ``str(err)`` is the whole message, one line,
    naming the field or file at fault.
    """


# Third-party code whose exceptions a user causes (a bad task name for lm-eval, a corrupt weights
# file for safetensors); the CLI reports them as one line, like a UserError, instead of a traceback.
USER_FACING_PACKAGES = ("lm_eval", "safetensors", "datasets", "tokenizers")


def raised_in(err: BaseException, packages: tuple[str, ...] = USER_FACING_PACKAGES) -> str | None:
    """The package of ``packages`` whose code raised ``err`` (its innermost Python frame), else None."""
    import os

    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if last is None:
        return None
    parts = os.path.normpath(last).split(os.sep)
    return next((p for p in packages if p in parts), None)


def one_line(err: BaseException) -> str:
    """``err``'s message as one line (its first non-empty line; the type name when it has none)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__
