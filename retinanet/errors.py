"""The one exception type that scripts turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (file, flag, checkpoint), not a bug.

    The message is complete and printed as is, e.g.
    ``data/train.csv:12: x2 (10.0) must be greater than x1 (20.0)``.
    """


def user_message(error: Exception) -> str:
    """The one-line message of ``error``, also when a DataLoader worker re-raised it with its traceback
    attached (the traceback's last line is ``module.Type: message``)."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return text
