//! The simulator's CSV: one line per (policy, cache size), columns fixed by [`HEADER`].

use std::io::Write;

use anyhow::Result;

use super::outcome::Outcome;

/// The CSV header, exactly.
pub const HEADER: &str = "trace,policy,is_default,cache_fraction,cache_rows,hit_rate,byte_hit_rate,overhead_bytes_per_row,ops_per_sec";

/// Writes the header and one line per outcome.
pub fn write(out: &mut impl Write, outcomes: &[Outcome]) -> Result<()> {
    writeln!(out, "{HEADER}")?;
    for o in outcomes {
        writeln!(
            out,
            "{},{},{},{:.6},{},{:.6},{:.6},{:.3},{:.0}",
            field(&o.trace),
            field(&o.policy),
            o.is_default,
            o.cache_fraction,
            o.cache_rows,
            o.hit_rate(),
            o.byte_hit_rate(),
            o.overhead_bytes_per_row(),
            o.ops_per_sec()
        )?;
    }
    Ok(())
}

/// Quotes a field that holds a comma or a quote.
fn field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_exactly_the_contract() -> Result<()> {
        let o = Outcome {
            trace: "en-layer2".into(),
            policy: "wtinylfu".into(),
            is_default: true,
            cache_fraction: 0.05,
            cache_rows: 1000,
            hits: 3,
            accesses: 4,
            measured_bytes: 16_000,
            accounted_bytes: Some(16_000),
            seconds: 2.0,
        };
        let mut buf = Vec::new();
        write(&mut buf, &[o])?;
        let text = String::from_utf8(buf)?;
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "trace,policy,is_default,cache_fraction,cache_rows,hit_rate,byte_hit_rate,overhead_bytes_per_row,ops_per_sec"
            )
        );
        assert_eq!(
            lines.next(),
            Some("en-layer2,wtinylfu,true,0.050000,1000,0.750000,0.750000,16.000,2")
        );
        assert_eq!(lines.next(), None);
        assert_eq!(field("a,b"), "\"a,b\"");
        Ok(())
    }
}
