"""The one exception type the export step raises for bad input or a failed gate."""


class ExportError(ValueError):
    """Raised with a message that names the argument or variant, the value, and the fix."""
