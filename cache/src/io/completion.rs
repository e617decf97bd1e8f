//! The end of one read, shared by both engines: the returned length is checked against the
//! length asked for, and (with the `failpoints` feature) faults are injected here, where a real
//! fault would surface, so the tier's handling of each runs in tests:
//!
//! | failpoint | effect |
//! |---|---|
//! | `nvme_read_eio` | the read fails with EIO |
//! | `nvme_read_eagain` | the read fails with EAGAIN (transient) |
//! | `nvme_read_short` | the read returns half the bytes asked for |
//! | `nvme_read_corrupt` | one bit of the returned block is flipped (the checksum must catch it) |
//! | `nvme_read_delay` | the read completes 50 ms late (`nvme_read_delay=sleep(50)`, or `return`) |

use super::{AlignedBuf, ReadFailure, ReadOp};

/// What the kernel said of a read: bytes read, or an errno.
pub(crate) type RawOutcome = Result<usize, ReadFailure>;

/// The result of `op` read into `buf`, given what the kernel returned.
pub(crate) fn finish_read(
    op: &ReadOp,
    outcome: RawOutcome,
    buf: AlignedBuf,
) -> Result<AlignedBuf, ReadFailure> {
    let outcome = inject_faults(outcome);
    let got = outcome?;
    if got != op.len {
        return Err(ReadFailure::Short { got, want: op.len });
    }
    #[cfg_attr(not(feature = "failpoints"), allow(unused_mut))]
    let mut buf = buf;
    #[cfg(feature = "failpoints")]
    if fail::eval("nvme_read_corrupt", |_| ()).is_some()
        && let Some(byte) = buf.get_mut(op.len / 2)
    {
        *byte ^= 0x10;
    }
    Ok(buf)
}

#[cfg(feature = "failpoints")]
fn inject_faults(outcome: RawOutcome) -> RawOutcome {
    fail::fail_point!("nvme_read_delay", |_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        outcome
    });
    fail::fail_point!("nvme_read_eio", |_| Err(ReadFailure::Os(libc::EIO)));
    fail::fail_point!("nvme_read_eagain", |_| Err(ReadFailure::Os(libc::EAGAIN)));
    fail::fail_point!("nvme_read_short", |_| outcome.map(|n| n / 2));
    outcome
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn inject_faults(outcome: RawOutcome) -> RawOutcome {
    outcome
}
