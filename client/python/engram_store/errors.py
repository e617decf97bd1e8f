"""Exceptions of the engram-store client: every failed call raises :class:`EngramStoreError`
(or a subclass for the codes a caller usually handles) carrying the gRPC status code and the
server's message, which names the bad value (table, group, layer, token id and position...).
"""

from __future__ import annotations

import grpc

__all__ = [
    "DataLossError",
    "EngramStoreError",
    "FailedPreconditionError",
    "ResourceExhaustedError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ProtocolError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
]


class EngramStoreError(Exception):
    """A failed engram-store call.

    Attributes:
        code: the ``grpc.StatusCode``.
        details: the server's message.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class NotFoundError(EngramStoreError):
    """Unknown table, group or layer (``NOT_FOUND``)."""


class InvalidArgumentError(EngramStoreError):
    """A malformed request: a bad token, too many rows... (``INVALID_ARGUMENT``)."""


class OutOfRangeError(EngramStoreError):
    """A row id past the end of a table (``OUT_OF_RANGE``)."""


class DataLossError(EngramStoreError):
    """The server found a corrupt block and served nothing (``DATA_LOSS``)."""


class UnavailableError(EngramStoreError):
    """The server is unreachable or overloaded (``UNAVAILABLE``)."""


class FailedPreconditionError(EngramStoreError):
    """The server cannot do this as it runs (no local socket, no GPU tier...)
    (``FAILED_PRECONDITION``)."""


class ResourceExhaustedError(EngramStoreError):
    """The server is at a limit (answer bytes in flight, regions...); retry later
    (``RESOURCE_EXHAUSTED``)."""
class UnauthenticatedError(EngramStoreError):
    """No token, or one the server does not know (``UNAUTHENTICATED``)."""


class PermissionDeniedError(EngramStoreError):
    """The token's role does not allow the call: a read token on an admin RPC
    (``PERMISSION_DENIED``)."""


class ProtocolError(EngramStoreError):
    """The server answered something this client cannot use."""

    def __init__(self, details: str):
        super().__init__(grpc.StatusCode.UNKNOWN, details)


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def from_rpc_error(error: grpc.RpcError) -> EngramStoreError:
    """The exception for a failed gRPC call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    return _BY_CODE.get(code, EngramStoreError)(code, details)


def error_for_code_name(name: str, details: str) -> EngramStoreError:
    """The exception for an error the server's local socket answered, by its code's name."""
    code = getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)
    return _BY_CODE.get(code, EngramStoreError)(code, details)
