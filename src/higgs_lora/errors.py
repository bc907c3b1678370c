"""The errors higgs-lora raises on purpose. The CLI prints any HiggsLoraError as one line and exits 1.

Library callers can catch the base class, or the kind they care about; each kind is also a ValueError
where the cause is a bad value, so code written against plain ValueError keeps working."""


class HiggsLoraError(Exception):
    """Base of every error higgs-lora raises on purpose (not a bug): one line, no traceback needed."""


class UserError(HiggsLoraError):
    """A problem with the user's input, files or settings."""


class ConfigError(UserError, ValueError):
    """A recipe or model setting that is out of range or unknown (an optimizer, schedule, precision name...)."""


class DataError(UserError, ValueError):
    """A data file or directory that cannot be used as it is: the message names the file, row or column."""


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed: unreadable, of another phase or network, or made with other settings."""


class RunDirectoryError(UserError):
    """An output directory that cannot be used: not empty, not writable, or in use by another process."""


class WriteError(UserError, OSError):
    """A file that could not be written (disk full, file too large, no permission): the message names the
    file. Also an OSError with the errno, so code that catches OSError keeps working."""

    def __init__(self, path, errno: int | None, reason: str):
        OSError.__init__(self, errno, reason, str(path))
        self.message = f"{path}: cannot write ({reason}); the file there before, if any, is unchanged"

    def __str__(self) -> str:
        return self.message


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: training stops there, and the weights are not saved."""


class Interrupted(HiggsLoraError):
    """Training was stopped (Ctrl-C, or a stop request) after writing a checkpoint; the message says where."""


def quoted(value: str, limit: int = 60) -> str:
    """A value from a file, quoted for a one-line message: a long one is shortened (a 1.5 MB field once
    made a 1.5 MB "one line")."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit // 2]!r}...{value[-limit // 4:]!r} ({len(value):,} characters)"
