"""Errors shared by every layer: the node, training and export catch these by type."""


class InputError(ValueError):
    """Bad input data (a message, a file, an array): the message names what is wrong.

    The node logs it (rate-limited), reports it through diagnostics and keeps serving; scripts
    print it and exit non-zero.
    """
