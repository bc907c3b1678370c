class UserError(Exception):
    """A problem with the user's input or files: the CLI prints it as one line and exits non-zero."""
