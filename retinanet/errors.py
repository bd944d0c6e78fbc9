"""The one exception type that scripts turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (file, flag, checkpoint), not a bug.

    The message is complete and printed as is, e.g.
    ``data/train.csv:12: x2 (10.0) must be greater than x1 (20.0)``.
    """
