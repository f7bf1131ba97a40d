"""The one error hierarchy of xinfer-sdk.

Every error a user can cause is an ``XinferError``; the CLI prints it as one line and exits with its
``exit_code``, the server answers it as a KServe error JSON with its ``http_status``. Anything that is
not an ``XinferError`` is a bug: the CLI exits 1, the server answers 500 and logs the traceback.

    XinferError                      exit 1, HTTP 500
    ├── UserError                    exit 2, HTTP 400   (bad input: fix the command / file / request)
    │   ├── ProfileError             a hardware profile is missing or malformed
    │   ├── ConversionError          a model cannot be read, exported or converted
    │   ├── CalibrationError         INT8 calibration data missing or unusable
    │   ├── MemoryBudgetError        the build cannot fit the profile's usable memory
    │   ├── BundleError              a bundle is missing, corrupt or tampered with
    │   ├── InvalidInput             a request's inputs do not match the model (name, dtype, shape)
    │   ├── ModelNotFound            HTTP 404: unknown model or version
    │   ├── Unauthorized             HTTP 401: API key missing or wrong
    │   └── MissingDependency        an optional package is not installed (names the pip extra)
    │       └── BackendUnavailable   an engine cannot run here (no GPU, no TensorRT, ...)
    ├── AccuracyGateError            exit 3: the converted model fell below the accuracy thresholds
    ├── InferenceError               HTTP 500: the engine failed while running a batch
    │   └── EngineFatal              the engine / device is unusable (sticky CUDA error): its worker is replaced
    ├── QueueFull                    HTTP 429: the batching queue is at max_queue_size
    ├── DeadlineExceeded             HTTP 504: the request's timeout passed before it ran
    ├── Cancelled                    HTTP 499-style: the caller cancelled the request
    ├── ServerClosing                HTTP 503: the model or server is draining / closed
    └── WorkersUnavailable           HTTP 503: no worker of the model is running and replacing them keeps failing
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "XinferError", "UserError", "ProfileError", "ConversionError", "CalibrationError", "MemoryBudgetError",
    "BundleError", "InvalidInput", "ModelNotFound", "Unauthorized", "MissingDependency", "BackendUnavailable",
    "AccuracyGateError", "InferenceError", "QueueFull", "DeadlineExceeded", "Cancelled", "ServerClosing",
    "EngineFatal", "WorkersUnavailable",
]

# Exit codes of the CLI (documented in README and docs/profiles.md).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_ACCURACY = 3


class XinferError(Exception):
    """Base of every error xinfer-sdk raises on purpose."""

    exit_code = EXIT_INTERNAL
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserError(XinferError):
    """The input (command line, file, request) is wrong; the message says what to change."""

    exit_code = EXIT_USER
    http_status = 400


class ProfileError(UserError):
    """A hardware profile is unknown or invalid; names the file, the field path and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None, hint: str | None = None):
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message, hint=hint,
                         details={"file": file, "field": field})
        self.file = file
        self.field = field


class ConversionError(UserError):
    """A model cannot be loaded, exported or converted."""


class EnginePrecisionError(ConversionError):
    """A TensorRT engine was built but its layers do not run in the requested precision (read back with the
    engine inspector). Fails the build even though the engine step is otherwise optional: a bundle labelled
    fp16 whose engine is FP32 is worse than no engine."""

    fails_build = True


class CalibrationError(UserError):
    """INT8 calibration data is missing or does not match the model's inputs."""


class MemoryBudgetError(UserError):
    """The model at the requested batch size does not fit the profile's usable memory."""


class BundleError(UserError):
    """A bundle is missing, corrupt, or its checksums do not match."""


class InvalidInput(UserError):
    """A request's inputs do not match the model's IO spec."""


class ModelNotFound(UserError):
    http_status = 404


class Unauthorized(UserError):
    http_status = 401


class MissingDependency(UserError):
    """An optional package is needed for this; the message names the pip extra that installs it."""

    def __init__(self, package: str, extra: str, *, purpose: str | None = None, cause: str | None = None):
        what = f" for {purpose}" if purpose else ""
        why = f" ({cause})" if cause else ""
        super().__init__(f"the Python package '{package}' is needed{what} but is not importable{why}",
                         hint=f"install it with: pip install 'xinfer-sdk[{extra}]'")
        self.package = package
        self.extra = extra


class BackendUnavailable(MissingDependency):
    """An inference engine cannot run on this machine (package missing, no GPU, wrong version)."""

    def __init__(self, backend: str, reason: str, *, extra: str | None = None):
        XinferError.__init__(self, f"backend '{backend}' is not available here: {reason}",
                             hint=f"install it with: pip install 'xinfer-sdk[{extra}]'" if extra else None)
        self.package = backend
        self.extra = extra or ""
        self.backend = backend


class AccuracyGateError(XinferError):
    """The converted model's accuracy fell below the profile's (or the command line's) thresholds."""

    exit_code = EXIT_ACCURACY
    http_status = 500


class InferenceError(XinferError):
    """The backend raised while running a batch; every request of that batch gets this error."""


class QueueFull(XinferError):
    exit_code = EXIT_USER
    http_status = 429


class DeadlineExceeded(XinferError):
    exit_code = EXIT_USER
    http_status = 504


class Cancelled(XinferError):
    exit_code = EXIT_USER
    http_status = 499


class ServerClosing(XinferError):
    exit_code = EXIT_USER
    http_status = 503


class EngineFatal(InferenceError):
    """The engine or its device is in a state no later batch can recover from (a sticky CUDA error: illegal
    memory access, device-side assert, launch failure, uncorrectable ECC error, device unavailable).

    A backend raises it from ``infer()``; the batching core fails that batch's requests with it (HTTP 500) and
    replaces the worker: a new backend instance (``factory`` + activate + warm-up) with exponential backoff.
    ``EngineFatal.recognise`` maps an engine's own error text to it (docs/batching.md, "Worker failures")."""

    #: texts an engine error contains when the CUDA context is unusable ("sticky" errors: "the process must be
    #: terminated and relaunched" in the CUDA runtime API's cudaError_t docs): the cudaError_t names (what
    #: cuda-python and TensorRT report), the runtime's messages for them (what ONNX Runtime's "CUDA failure N:
    #: <message>" and PyTorch's "CUDA error: <message>" carry) and CUDA_ERROR_* driver names. Out of memory and
    #: invalid arguments are NOT here: the next batch can succeed, so only the batch fails.
    MARKERS = (
        "cudaErrorIllegalAddress", "an illegal memory access was encountered",  # 700
        "cudaErrorLaunchTimeout", "the launch timed out and was terminated",  # 702
        "cudaErrorAssert", "device-side assert triggered",  # 710
        "cudaErrorHardwareStackError", "cudaErrorIllegalInstruction", "cudaErrorMisalignedAddress",  # 714-716
        "cudaErrorInvalidPc", "cudaErrorLaunchFailure", "unspecified launch failure",  # 718, 719
        "cudaErrorECCUncorrectable", "uncorrectable ECC error",  # 214
        "cudaErrorDevicesUnavailable", "busy or unavailable",  # 46: the device fell off the bus / is gone
        "CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_ASSERT", "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_ECC_UNCORRECTABLE",
    )

    @classmethod
    def recognise(cls, exc: BaseException, engine: str) -> EngineFatal | None:
        """An ``EngineFatal`` naming ``exc`` when its text holds one of ``MARKERS``, else None (not fatal)."""
        text = str(exc)
        for marker in cls.MARKERS:
            if marker in text:
                return cls(f"{engine}: the device or engine is in an unrecoverable state ({type(exc).__name__}: "
                           f"{text.strip()})", hint="this worker is being replaced; if it keeps happening, check "
                           "the GPU (nvidia-smi, dmesg Xid errors)")
        return None


class WorkersUnavailable(XinferError):
    """No worker of a model is running and replacing them has failed several times in a row: queued requests
    are failed and new ones refused with this (HTTP 503) until a replacement starts."""

    exit_code = EXIT_INTERNAL
    http_status = 503
