//! The one place errors become gRPC statuses (and the in-band error of a LookupStream answer).

use engram_store_proto::v1 as pb;
use tonic::{Code, Status};

use crate::engine::{LookupError, ProtocolError};

/// The gRPC code for an engine error.
pub(crate) fn code_of(e: &LookupError) -> Code {
    match e {
        LookupError::UnknownTable { .. }
        | LookupError::UnknownGroup { .. }
        | LookupError::UnknownLayer { .. }
        | LookupError::NoSuchFile { .. } => Code::NotFound,
        LookupError::OutOfRange { .. } => Code::OutOfRange,
        LookupError::Protocol(_)
        | LookupError::TooManyRows { .. }
        | LookupError::BadToken(_)
        | LookupError::ColumnRange { .. }
        | LookupError::Hash { .. } => Code::InvalidArgument,
        LookupError::Region(r) => region_code(r),
        LookupError::NoGpuTier { .. }
        | LookupError::NotShared { .. }
        | LookupError::VersionNotServed { .. }
        | LookupError::RowNotHeld { .. } => Code::FailedPrecondition,
        LookupError::Overloaded { .. } => Code::ResourceExhausted,
        LookupError::Tier { source, .. } => match source {
            engram_store_cache::TierError::Corrupt { .. } => Code::DataLoss,
            t if t.is_transient() => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

fn region_code(e: &crate::regions::RegionError) -> Code {
    use crate::regions::RegionError as R;
    match e {
        R::Unknown { .. } => Code::NotFound,
        R::NoGpu | R::WrongDevice { .. } | R::PathRefused => Code::FailedPrecondition,
        R::TooMany { .. } => Code::ResourceExhausted,
        _ => Code::InvalidArgument,
    }
}

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Self {
        Status::new(code_of(&e), e.to_string())
    }
}

impl From<crate::engine::EngineError> for Status {
    fn from(e: crate::engine::EngineError) -> Self {
        Status::internal(e.to_string())
    }
}

impl From<ProtocolError> for Status {
    fn from(e: ProtocolError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// A failed request of a LookupStream, answered in the stream.
pub(crate) fn in_band_error(e: &LookupError) -> pb::LookupResponse {
    pb::LookupResponse {
        error_code: code_of(e) as i32,
        error_message: e.to_string(),
        ..Default::default()
    }
}
