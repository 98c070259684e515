"""The one error type for bad user input: raised before any training starts."""


class ConfigError(ValueError):
    """A bad config value, path or file: the message is one line naming the key and the fix.

    Written as ``"<key>=<value>: <what is wrong>; <how to fix it>"`` so a user who
    sees only this line knows what to change on the command line.
    """
