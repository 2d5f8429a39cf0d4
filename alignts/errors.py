"""Every error alignts raises. Each message says what was expected, what came, and the fix."""

from __future__ import annotations


class AlignTSError(Exception):
    """Base of every alignts error (catch this one to catch them all)."""


class InputError(AlignTSError, ValueError):
    """Bad user input: NaN/inf, too-short or constant series, wrong channel count, bad option values."""


class ShapeError(InputError):
    """An array has the wrong rank or size."""


class DataError(InputError):
    """A data source cannot be read: no numeric columns, unparseable dates, unknown statsmodels name."""


class CodecError(InputError):
    """A codec table is invalid (missing digit ids, duplicates) or a token stream cannot be decoded."""


class ArtifactError(AlignTSError):
    """A bundle or model file is missing, corrupt or tampered (sha256 mismatch), or not what it claims."""


class ManifestError(ArtifactError):
    """manifest.json is missing, malformed, or of an unknown major format version."""


class BackboneNotFoundError(ArtifactError):
    """A bundle points to a backbone (by sha256) that is not available."""


class BackendUnavailableError(AlignTSError, ImportError):
    """An optional backend (onnxruntime, llama-cpp-python, CUDA) is not installed or not working."""


class NotPlannedError(AlignTSError, RuntimeError):
    """forecast() was called before plan()."""


class NonFiniteOutputError(AlignTSError, ArithmeticError):
    """A forecast came out NaN or inf; the message names where, the input's range and the likely cause."""


class BudgetExceededError(AlignTSError):
    """No variant of a bundle fits the memory budget; the message gives the smallest budget that works."""

    def __init__(self, message: str, min_budget_bytes: int | None = None):
        super().__init__(message)
        self.min_budget_bytes = min_budget_bytes


class ValidationError(ArtifactError):
    """An exported model differs from its torch reference by more than the tolerance."""


def missing_extra(package: str, extra: str, needed_for: str = "here") -> BackendUnavailableError:
    """The error for an optional dependency that is not installed, with the install command as the fix.

    ``needed_for`` completes "it is needed ...", e.g. ``"for statsmodels:NAME data"``."""
    return BackendUnavailableError(
        f"{package} is not installed; it is needed {needed_for}. Fix: pip install 'alignts[{extra}]'"
    )
