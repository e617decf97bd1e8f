//! Cache sizes on the command line: `0.5%,1%,20%` as fractions of the distinct rows a trace
//! touches, or plain row counts (`100000`).

use anyhow::{Context, Result, ensure};

/// One requested cache size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheSize {
    /// A fraction (0..=1) of the distinct rows.
    Fraction(f64),
    /// An absolute number of rows.
    Rows(usize),
}

impl CacheSize {
    /// Rows for a trace with `distinct` distinct rows (at least 1).
    pub fn rows(self, distinct: usize) -> usize {
        match self {
            Self::Fraction(f) => ((distinct as f64 * f).round() as usize).max(1),
            Self::Rows(n) => n,
        }
    }
}

/// Parses a comma-separated list of sizes.
pub fn parse_sizes(list: &str) -> Result<Vec<CacheSize>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if let Some(pct) = s.strip_suffix('%') {
                let f: f64 = pct.parse().with_context(|| format!("cache size {s}"))?;
                ensure!(f > 0.0 && f <= 100.0, "cache size {s} is not in (0%, 100%]");
                Ok(CacheSize::Fraction(f / 100.0))
            } else {
                let n: usize = s.parse().with_context(|| format!("cache size {s}"))?;
                ensure!(n > 0, "cache size {s} must be positive");
                Ok(CacheSize::Rows(n))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentages_and_rows() -> Result<()> {
        let sizes = parse_sizes("0.5%, 20%,1000")?;
        assert_eq!(
            sizes,
            [
                CacheSize::Fraction(0.005),
                CacheSize::Fraction(0.2),
                CacheSize::Rows(1000)
            ]
        );
        assert_eq!(sizes[0].rows(10_000), 50);
        assert_eq!(sizes[2].rows(10), 1000);
        assert!(parse_sizes("0%").is_err());
        assert!(parse_sizes("ten").is_err());
        Ok(())
    }
}
