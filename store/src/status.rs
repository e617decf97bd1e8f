//! The one place engine errors become gRPC statuses.

use tonic::{Code, Status};

use crate::engine::LookupError;

/// The gRPC code for an engine error.
pub(crate) fn code_of(e: &LookupError) -> Code {
    match e {
        LookupError::UnknownTable { .. }
        | LookupError::NotFound(_)
        | LookupError::UnknownGroup { .. }
        | LookupError::UnknownLayer { .. } => Code::NotFound,
        LookupError::OutOfRange { .. } => Code::OutOfRange,
        LookupError::TooManyIds { .. }
        | LookupError::InvalidArgument(_)
        | LookupError::BadToken(_) => Code::InvalidArgument,
        LookupError::DataLoss { .. } => Code::DataLoss,
        LookupError::Io {
            transient: true, ..
        } => Code::Unavailable,
        LookupError::Io {
            transient: false, ..
        } => Code::Internal,
    }
}

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Self {
        Status::new(code_of(&e), e.to_string())
    }
}
