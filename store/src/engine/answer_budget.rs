//! The budget of answer bytes in flight: every answer the server builds in its own memory
//! reserves its size first and holds the reservation until its last byte has been sent (the
//! gRPC edge keeps it with the response body). When the budget is spent a request waits a
//! little, then is refused with RESOURCE_EXHAUSTED, so clients that never read their answers,
//! or too many large ones at once, cannot grow the server's memory past the budget.
//!
//! A sixteenth of the budget is kept for small answers (at most [`SMALL_ANSWER`] bytes, which
//! leave the server's memory as soon as they are written to the socket): clients that hold large
//! answers unread cannot starve the ordinary small lookups of everyone else.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admission::RowsPermit;
use super::error::LookupError;

/// Reservations are counted in KiB (a semaphore counts in u32).
const UNIT: u64 = 1024;

/// Answers up to this size may use the pool kept for small answers (an HTTP/2 window's worth).
pub const SMALL_ANSWER: u64 = 64 << 10;

/// The budget.
#[derive(Debug)]
pub struct AnswerBudget {
    large: Pool,
    small: Pool,
    wait: Duration,
}

/// One pool of the budget.
#[derive(Debug)]
struct Pool {
    permits: Arc<Semaphore>,
    units: u32,
}

impl Pool {
    fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    fn reserved_units(&self) -> u64 {
        u64::from(self.units) - self.permits.available_permits() as u64
    }
}

/// Bytes of one answer, reserved until dropped (with the rows its request was admitted for,
/// when it holds them).
#[derive(Debug, Clone)]
pub struct AnswerReservation {
    _permit: Arc<OwnedSemaphorePermit>,
    _rows: Option<Arc<RowsPermit>>,
}

impl AnswerReservation {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: Arc::new(permit),
            _rows: None,
        }
    }

    /// The reservation, also holding the admission of its request's rows until dropped.
    pub(crate) fn holding(mut self, rows: RowsPermit) -> Self {
        self._rows = Some(Arc::new(rows));
        self
    }
}

impl AnswerBudget {
    /// A budget of `bytes` (a sixteenth of it, at least 1 MiB, kept for small answers), waiting
    /// up to `wait` for room.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let small = (bytes / 16).max(1 << 20);
        Self {
            large: Pool::new(bytes.saturating_sub(small).max(UNIT)),
            small: Pool::new(small),
            wait,
        }
    }

    /// Bytes the budget holds.
    pub fn total_bytes(&self) -> u64 {
        (u64::from(self.large.units) + u64::from(self.small.units)) * UNIT
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> u64 {
        (self.large.reserved_units() + self.small.reserved_units()) * UNIT
    }

    /// Reserves `bytes` for one answer (an answer larger than the whole large pool reserves all
    /// of it), waiting up to the configured time for room. A small answer takes room in the small
    /// pool when the large one has none.
    pub async fn reserve(&self, bytes: u64) -> Result<AnswerReservation, LookupError> {
        let units = |pool: &Pool| {
            u32::try_from(bytes.div_ceil(UNIT))
                .unwrap_or(u32::MAX)
                .clamp(1, pool.units)
        };
        if bytes <= SMALL_ANSWER {
            let n = units(&self.small);
            if let Ok(permit) = self.small.permits.clone().try_acquire_many_owned(n) {
                return Ok(AnswerReservation::new(permit));
            }
        }
        let acquire = self
            .large
            .permits
            .clone()
            .acquire_many_owned(units(&self.large));
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(AnswerReservation::new(permit)),
            _ => Err(LookupError::Overloaded {
                what: "answer bytes in flight",
                limit: self.total_bytes(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_hold_until_dropped_and_refuse_when_full() {
        let mib = 1 << 20;
        let budget = AnswerBudget::new(64 * mib, Duration::from_millis(20));
        assert_eq!(budget.total_bytes(), 64 * mib);
        let a = budget.reserve(40 * mib).await.expect("room");
        assert_eq!(budget.reserved_bytes(), 40 * mib);
        let err = budget.reserve(30 * mib).await.expect_err("full");
        assert!(matches!(err, LookupError::Overloaded { .. }), "{err}");
        // Large answers hold the large pool; small answers still get through.
        let b = budget
            .reserve(20 * mib)
            .await
            .expect("the rest of the large pool");
        let small = budget.reserve(SMALL_ANSWER).await.expect("the small pool");
        drop((a, b, small));
        let big = budget
            .reserve(1 << 40)
            .await
            .expect("capped at the large pool");
        assert_eq!(budget.reserved_bytes(), 60 * mib);
        drop(big);
        assert_eq!(budget.reserved_bytes(), 0);
    }
}
