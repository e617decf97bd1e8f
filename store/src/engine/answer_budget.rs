//! The budget of answer bytes in flight: every answer the server builds in its own memory
//! reserves its size first and holds the reservation until its last byte has been sent (the
//! gRPC edge keeps it with the response body). When the budget is spent a request waits a
//! little, then is refused with RESOURCE_EXHAUSTED, so clients that never read their answers,
//! or too many large ones at once, cannot grow the server's memory past the budget.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::LookupError;

/// Reservations are counted in KiB (a semaphore counts in u32).
const UNIT: u64 = 1024;

/// The budget.
#[derive(Debug)]
pub struct AnswerBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
    wait: Duration,
}

/// Bytes of one answer, reserved until dropped.
#[derive(Debug, Clone)]
pub struct AnswerReservation {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl AnswerBudget {
    /// A budget of `bytes` (at least one unit), waiting up to `wait` for room.
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let total_units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            wait,
        }
    }

    /// Bytes the budget holds.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> u64 {
        (u64::from(self.total_units) - self.permits.available_permits() as u64) * UNIT
    }

    /// Reserves `bytes` for one answer (an answer larger than the whole budget reserves all of
    /// it), waiting up to the configured time for room.
    pub async fn reserve(&self, bytes: u64) -> Result<AnswerReservation, LookupError> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_units);
        let acquire = self.permits.clone().acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(AnswerReservation {
                _permit: Arc::new(permit),
            }),
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
        let budget = AnswerBudget::new(10 * UNIT, Duration::from_millis(20));
        let a = budget.reserve(6 * UNIT).await.expect("room");
        assert_eq!(budget.reserved_bytes(), 6 * UNIT);
        let err = budget.reserve(5 * UNIT).await.expect_err("full");
        assert!(matches!(err, LookupError::Overloaded { .. }), "{err}");
        drop(a);
        let big = budget
            .reserve(1 << 40)
            .await
            .expect("capped at the whole budget");
        assert_eq!(budget.reserved_bytes(), 10 * UNIT);
        drop(big);
        assert_eq!(budget.reserved_bytes(), 0);
    }
}
