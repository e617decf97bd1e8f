//! Admission of requests by the rows they ask for: the rows of every request admitted and not
//! yet answered are counted against one bound ([`EngineConfig::max_rows_in_flight`]); a request
//! that would go past it is refused at once with RESOURCE_EXHAUSTED instead of waiting in a
//! queue, so the requests admitted keep their latency and the server's memory stays bounded
//! under any offered load. A permit is held until the answer has been sent (it rides with the
//! answer's reservation, [`super::AnswerReservation`]) or, for LookupInto, written.
//!
//! [`EngineConfig::max_rows_in_flight`]: super::EngineConfig::max_rows_in_flight

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::LookupError;

/// The bound and the rows admitted now.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    limit: u32,
    refused: AtomicU64,
}

/// Rows of one admitted request, counted until dropped.
#[derive(Debug)]
pub struct RowsPermit {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// A bound of `max_rows` rows in flight (at least 1, at most `u32::MAX`).
    pub(crate) fn new(max_rows: usize) -> Self {
        let limit = u32::try_from(max_rows.max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
            refused: AtomicU64::new(0),
        }
    }

    /// Admits a request of `rows` rows now, or refuses it: never waits. A request larger than
    /// the whole bound counts as the whole bound (it is admitted when nothing else is in
    /// flight).
    pub(crate) fn admit(&self, rows: usize) -> Result<RowsPermit, LookupError> {
        let n = u32::try_from(rows).unwrap_or(u32::MAX).clamp(1, self.limit);
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(RowsPermit { _permit: permit }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(LookupError::Overloaded {
                    what: "rows in flight",
                    limit: u64::from(self.limit),
                })
            }
        }
    }

    /// Rows admitted and not yet answered.
    pub(crate) fn in_flight(&self) -> u64 {
        u64::from(self.limit) - self.permits.available_permits() as u64
    }

    /// The bound.
    pub(crate) fn limit(&self) -> u64 {
        u64::from(self.limit)
    }

    /// Requests refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_bound_refuses_beyond_and_frees_on_drop() {
        let a = Admission::new(1000);
        let first = a.admit(600).expect("room");
        assert_eq!(a.in_flight(), 600);
        let err = a.admit(500).expect_err("600 + 500 > 1000");
        assert!(
            matches!(
                err,
                LookupError::Overloaded {
                    what: "rows in flight",
                    limit: 1000
                }
            ),
            "{err}"
        );
        let second = a.admit(400).expect("exactly the bound");
        assert_eq!(a.in_flight(), 1000);
        assert!(a.admit(1).is_err());
        assert_eq!(a.refused(), 2);
        drop((first, second));
        assert_eq!(a.in_flight(), 0);
        // Larger than the bound: admitted alone, as the whole bound.
        let big = a.admit(5000).expect("alone");
        assert_eq!(a.in_flight(), 1000);
        assert!(a.admit(1).is_err());
        drop(big);
        // An empty request still takes one row's place (it is work too).
        let empty = a.admit(0).expect("room");
        assert_eq!(a.in_flight(), 1);
        drop(empty);
    }
}
