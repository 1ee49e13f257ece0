"""The error raised when the conformance kit's own dependencies are not installed."""

from __future__ import annotations

#: The extra that installs what the kit needs (pytest and hypothesis), and nothing heavier.
KIT_EXTRA = "kit"


def missing_kit_error(exc: ModuleNotFoundError) -> ImportError:
    """An ImportError saying which package is missing and the one-line install that brings it."""
    missing = exc.name or "a dependency"
    error = ImportError(
        f"contrastive.testing (the conformance kit) needs {missing!r}, which is not installed. "
        "Install the kit's dependencies (pytest and hypothesis) with: "
        f'pip install "contrastive-kit[{KIT_EXTRA}]" '
        f'(from a checkout: pip install ".[{KIT_EXTRA}]"), or just: pip install hypothesis'
    )
    error.name = exc.name
    return error
