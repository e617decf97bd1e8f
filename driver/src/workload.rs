//! Request streams for the demo and the benchmarks: row ids drawn from a Zipf law (rank r drawn
//! with probability ~ 1/r^s, ranks scattered over the table by a fixed bijection so hot rows do
//! not share blocks), uniformly, or replayed from a trace file of little-endian u64 row ids.

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// Where ids come from.
#[derive(Debug, Clone)]
pub enum IdDistribution {
    /// Zipf with exponent `s` over all rows.
    Zipf(f64),
    /// Uniform over all rows.
    Uniform,
    /// Row ids replayed in order from a trace (wrapping around).
    Trace(std::sync::Arc<Vec<u64>>),
}

impl std::str::FromStr for IdDistribution {
    type Err = String;
    /// `zipf:0.8`, `uniform`, or `trace:FILE` (LE u64 row ids).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Self::Uniform);
        }
        if let Some(x) = s.strip_prefix("zipf:") {
            let e: f64 = x
                .parse()
                .map_err(|_| format!("bad Zipf exponent {x:?} in {s:?}"))?;
            if !(e > 0.0 && e.is_finite()) {
                return Err(format!("Zipf exponent must be positive, got {e}"));
            }
            return Ok(Self::Zipf(e));
        }
        if let Some(path) = s.strip_prefix("trace:") {
            let bytes = std::fs::read(path).map_err(|e| format!("read trace {path}: {e}"))?;
            if bytes.len() % 8 != 0 || bytes.is_empty() {
                return Err(format!(
                    "trace {path}: {} bytes is not a non-empty list of u64",
                    bytes.len()
                ));
            }
            let ids = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            return Ok(Self::Trace(std::sync::Arc::new(ids)));
        }
        Err(format!(
            "unknown distribution {s:?}: use zipf:S, uniform or trace:FILE"
        ))
    }
}

/// Draws row ids for one client.
#[derive(Debug)]
pub struct IdSampler {
    rows: u64,
    kind: Kind,
    rng: SmallRng,
}

#[derive(Debug)]
enum Kind {
    Zipf {
        dist: Zipf<f64>,
        mult: u64,
    },
    Uniform,
    Trace {
        ids: std::sync::Arc<Vec<u64>>,
        next: usize,
    },
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl IdSampler {
    /// A sampler over `rows` rows; `stream` picks an independent stream (and trace offset).
    pub fn new(dist: &IdDistribution, rows: u64, seed: u64, stream: u64) -> Result<Self, String> {
        if rows == 0 {
            return Err("the table has no rows".into());
        }
        let rng: SmallRng =
            rand::SeedableRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let kind = match dist {
            IdDistribution::Zipf(s) => {
                let dist =
                    Zipf::new(rows as f64, *s).map_err(|e| format!("Zipf({rows}, {s}): {e}"))?;
                let mut mult = (0x9E37_79B9_7F4A_7C15 % rows.max(2)) | 1;
                while gcd(mult, rows) != 1 {
                    mult += 2;
                }
                Kind::Zipf { dist, mult }
            }
            IdDistribution::Uniform => Kind::Uniform,
            IdDistribution::Trace(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id >= rows) {
                    return Err(format!(
                        "trace row id {bad} is out of range for {rows} rows"
                    ));
                }
                let next = (stream as usize).wrapping_mul(7919) % ids.len();
                Kind::Trace {
                    ids: ids.clone(),
                    next,
                }
            }
        };
        Ok(Self { rows, kind, rng })
    }

    /// The next row id.
    pub fn next_id(&mut self) -> u64 {
        match &mut self.kind {
            Kind::Zipf { dist, mult } => {
                let rank = (dist.sample(&mut self.rng) as u64).saturating_sub(1) % self.rows;
                ((u128::from(rank) * u128::from(*mult)) % u128::from(self.rows)) as u64
            }
            Kind::Uniform => self.rng.random_range(0..self.rows),
            Kind::Trace { ids, next } => {
                let id = ids[*next];
                *next = (*next + 1) % ids.len();
                id
            }
        }
    }

    /// Fills `out` with the next ids.
    pub fn fill(&mut self, out: &mut Vec<u64>, n: usize) {
        out.clear();
        out.extend((0..n).map(|_| self.next_id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let mut s = IdSampler::new(&IdDistribution::Zipf(1.0), 1000, 1, 0).expect("sampler");
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[s.next_id() as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top10: u32 = counts[..10].iter().sum();
        assert!(top10 > 30_000, "top 1% took {top10} of 100000");
        assert!("zipf:x".parse::<IdDistribution>().is_err());
        assert!(matches!(
            "uniform".parse::<IdDistribution>(),
            Ok(IdDistribution::Uniform)
        ));
    }
}
