"""Errors that qpass reports to users as one line (and exit code 2 from the CLI)."""


class QpassError(Exception):
    """A user-facing error: bad input, unsupported model, or a pass that cannot apply.

    The message is a single line that names the file or object and the reason.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(QpassError):
    """The model file cannot be read, parsed, checked or normalised."""


class CalibrationDataError(QpassError):
    """The calibration / input data does not fit the model."""


class PipelineError(QpassError):
    """A pipeline is malformed or a pass's requirements are not met."""


class UnsupportedOpError(QpassError):
    """An op has no implementation in a backend."""
