"""The one exception type for mistakes a user can make (bad config, missing files, bad data)."""


class NashError(Exception):
    """A problem the user can fix. The CLI prints its message as one line, without a traceback.

    The message should name the problem and the fix: which key, which file, which line.
    """
