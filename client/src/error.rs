//! Typed client errors, and the one `match` over gRPC codes that decides what is retried.

use tonic::Code;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is malformed or the connection could not be made.
    #[error("connect to {addr}: {message}")]
    Connect {
        /// Address.
        addr: String,
        /// Why.
        message: String,
    },
    /// Unknown table, group or layer.
    #[error("not found: {0}")]
    NotFound(String),
    /// A row id past the end of the table.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A malformed request (too many ids, bad tokens...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server found a corrupt block; the rows were not served.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The server is unreachable or overloaded, after every retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No token, or one the server does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role does not allow this call (a read token on an admin RPC).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Any other status.
    #[error("{code:?}: {message}")]
    Status {
        /// gRPC code.
        code: Code,
        /// Server message.
        message: String,
    },
    /// The server answered something this client cannot use.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A local step failed (making or mapping a memfd, the server's local socket), with its
    /// cause.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The gRPC code behind the error (`Unknown` for local errors).
    pub fn code(&self) -> Code {
        match self {
            ClientError::NotFound(_) => Code::NotFound,
            ClientError::OutOfRange(_) => Code::OutOfRange,
            ClientError::InvalidArgument(_) => Code::InvalidArgument,
            ClientError::DataLoss(_) => Code::DataLoss,
            ClientError::Unauthenticated(_) => Code::Unauthenticated,
            ClientError::PermissionDenied(_) => Code::PermissionDenied,
            ClientError::Unavailable(_) | ClientError::Connect { .. } => Code::Unavailable,
            ClientError::Status { code, .. } => *code,
            ClientError::Protocol(_) | ClientError::Local(_) => Code::Unknown,
        }
    }

    /// A status code and message, as a typed error.
    pub fn from_code(code: Code, message: String) -> Self {
        match code {
            Code::NotFound => ClientError::NotFound(message),
            Code::OutOfRange => ClientError::OutOfRange(message),
            Code::InvalidArgument => ClientError::InvalidArgument(message),
            Code::DataLoss => ClientError::DataLoss(message),
            Code::Unavailable => ClientError::Unavailable(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            code => ClientError::Status { code, message },
        }
    }
}

impl ClientError {
    /// A status given by its name (`"INVALID_ARGUMENT"`, as the local socket answers), as a
    /// typed error.
    pub fn from_code_name(name: &str, message: String) -> Self {
        let code = match name {
            "INVALID_ARGUMENT" => Code::InvalidArgument,
            "NOT_FOUND" => Code::NotFound,
            "FAILED_PRECONDITION" => Code::FailedPrecondition,
            "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
            "PERMISSION_DENIED" => Code::PermissionDenied,
            "UNAVAILABLE" => Code::Unavailable,
            "OUT_OF_RANGE" => Code::OutOfRange,
            _ => Code::Internal,
        };
        Self::from_code(code, message)
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::from_code(s.code(), s.message().to_owned())
    }
}

/// True for the codes worth retrying: only UNAVAILABLE (the server never saw, or could not take,
/// the request). Every code is listed so a new one is a decision, not an accident.
pub(crate) fn is_retryable(code: Code) -> bool {
    match code {
        Code::Unavailable => true,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::InvalidArgument
        | Code::DeadlineExceeded
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => false,
    }
}
