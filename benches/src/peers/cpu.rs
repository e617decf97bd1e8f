//! CPU time a process has used (user + system, all its threads), read from `/proc/PID/stat`.
//! The comparison reports each system's CPU per row beside its rate: on a shared machine the
//! rate depends on what else runs, the CPU a row costs much less.

use anyhow::{Context, Result};

/// CPU seconds used so far by process `pid` (this process when `None`).
pub fn process_cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let ticks = cpu_ticks(&text).with_context(|| format!("parse {path}"))?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15, counted after the command name,
/// which may itself hold spaces and parentheses).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() -> Result<()> {
        let line = "4242 (tokio (rt) x) S 1 2 3 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(line), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert!(process_cpu_seconds(None)? >= 0.0);
        assert!(process_cpu_seconds(Some(std::process::id()))? >= 0.0);
        assert!(process_cpu_seconds(Some(u32::MAX)).is_err());
        Ok(())
    }
}
