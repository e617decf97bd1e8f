//! Which policies to simulate: `--policies` is a comma-separated list of names (`all` for every
//! one). For tuning experiments, `s3sketch`, `wtinylfu` and `s3fifo` take overrides after colons:
//! - `s3sketch:w=0.2:lo=0.02:hi=0.4:st=0.05:sp=2:c=4:d=16:p=10:mp=3:g=2`: initial, smallest and
//!   largest window and climbing step (fractions of the slots), accesses per climbing sample per
//!   slot, sketch counters, doorkeeper bits and aging period per row (at the largest window, and
//!   `mp` at the smallest), direct-admission threshold;
//! - `wtinylfu:w=0.01:c=4:d=4:p=10`: window fraction and the sketch's sizing;
//! - `s3fifo:s=0.1:g=1`: small-queue fraction and ghost entries per main slot.
//!
//! A plain name means the shipped tuning; only the plain default is marked `is_default`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use engram_store_cache::policy::{
    self, DEFAULT_POLICY, GhostConfig, MiniConfig, MokaTinyLfu, Opt, POLICY_NAMES, Policy, S3Fifo,
    S3FifoConfig, S3Sketch, S3SketchConfig, SimPolicy, WTinyLfu, WTinyLfuConfig, WithPolicy,
};

/// One policy to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// As written (the CSV's `policy` column).
    pub label: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Opt,
    Moka,
    Slot(&'static str),
    TunedS3Sketch(S3SketchConfig),
    TunedWTinyLfu(WTinyLfuConfig),
    TunedS3Fifo(S3FifoConfig),
}

impl PolicySpec {
    /// True for the RAM tier's default policy with its shipped tuning.
    pub fn is_default(&self) -> bool {
        self.kind == Kind::Slot(DEFAULT_POLICY)
    }

    /// True for the offline optimum.
    pub fn is_opt(&self) -> bool {
        self.kind == Kind::Opt
    }

    /// True for the moka baseline.
    pub fn is_moka(&self) -> bool {
        self.kind == Kind::Moka
    }

    /// Builds the policy with `rows` rows; `next_uses` is the trace's future, for OPT.
    pub fn build(&self, rows: usize, next_uses: &Arc<[u64]>) -> Result<Box<dyn SimPolicy>> {
        Ok(match &self.kind {
            Kind::Opt => Box::new(Opt::new(rows, Arc::clone(next_uses))),
            Kind::Moka => Box::new(MokaTinyLfu::new(rows)),
            Kind::Slot(name) => policy::by_name_with(name, rows, BoxSim)
                .with_context(|| format!("policy {name}"))?,
            Kind::TunedS3Sketch(config) => Box::new(S3Sketch::with_config(rows, *config)),
            Kind::TunedWTinyLfu(config) => Box::new(WTinyLfu::with_config(rows, *config)),
            Kind::TunedS3Fifo(config) => Box::new(S3Fifo::with_config(rows, *config)),
        })
    }
}

/// Boxes a slot policy as a [`SimPolicy`] directly (one allocation, as the allocator measures).
struct BoxSim;

impl WithPolicy for BoxSim {
    type Output = Box<dyn SimPolicy>;
    fn with<P: Policy + 'static>(self, policy: P) -> Box<dyn SimPolicy> {
        Box::new(policy)
    }
}

/// Every policy: OPT, moka, then the slot policies.
pub fn all() -> Vec<PolicySpec> {
    let mut specs = vec![spec("opt", Kind::Opt), spec("moka", Kind::Moka)];
    specs.extend(POLICY_NAMES.iter().map(|&n| spec(n, Kind::Slot(n))));
    specs
}

fn spec(label: &str, kind: Kind) -> PolicySpec {
    PolicySpec {
        label: label.to_owned(),
        kind,
    }
}

/// Parses `--policies`.
pub fn parse_policies(list: &str) -> Result<Vec<PolicySpec>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "all" {
            out.extend(all());
            continue;
        }
        let mut parts = item.split(':');
        let name = parts.next().unwrap_or_default();
        let tunings: Vec<&str> = parts.collect();
        let kind = match name {
            "opt" => Kind::Opt,
            "moka" => Kind::Moka,
            _ => match POLICY_NAMES.iter().find(|&&n| n == name) {
                Some(&n) => Kind::Slot(n),
                None => bail!(
                    "unknown policy {name}; known: all, opt, moka, {}",
                    POLICY_NAMES.join(", ")
                ),
            },
        };
        if tunings.is_empty() {
            out.push(spec(item, kind));
            continue;
        }
        let mut values = Vec::new();
        for t in tunings {
            let Some((k, v)) = t.split_once('=') else {
                bail!("tuning {t} in {item} is not KEY=VALUE");
            };
            let num: f64 = v.parse().with_context(|| format!("tuning {t} in {item}"))?;
            values.push((k, num));
        }
        let tuned = match kind {
            Kind::Slot(name @ ("s3sketch" | "s3arc" | "s3mini")) => {
                let mut c = match name {
                    "s3arc" => S3SketchConfig::arc(),
                    "s3mini" => S3SketchConfig::mini(),
                    _ => S3SketchConfig::default(),
                };
                for (k, num) in values {
                    match k {
                        "w" => c.window.initial = num,
                        "lo" => c.window.min = num,
                        "hi" => c.window.max = num,
                        "st" => c.window.step = num,
                        "sp" => c.window.period_per_slot = num,
                        "c" => c.sketch.counters_per_row = num,
                        "d" => c.sketch.doorkeeper_bits_per_row = num,
                        "p" => c.sketch.period_per_row = num,
                        "g" => c.direct_threshold = num as u32,
                        "mp" => c.min_period_per_row = num,
                        "ms" | "mr" | "me" | "mf" | "mm" | "aw" | "ap" | "bw" | "bp" | "cw"
                        | "cp" => {
                            let m = c.mini.get_or_insert_with(MiniConfig::default);
                            match k {
                                "ms" => m.sample_shift = num as u32,
                                "mr" => m.min_rows = num as usize,
                                "me" => m.epoch_per_row = num,
                                "mf" => m.first = num as usize,
                                "mm" => m.margin = num,
                                "aw" => m.candidates[0].window = num,
                                "ap" => m.candidates[0].period_per_row = num,
                                "bw" => m.candidates[1].window = num,
                                "bp" => m.candidates[1].period_per_row = num,
                                "cw" => m.candidates[2].window = num,
                                _ => m.candidates[2].period_per_row = num,
                            }
                        }
                        "gs" | "ge" | "gg" => {
                            let g = c.ghost.get_or_insert_with(GhostConfig::default);
                            match k {
                                "gs" => g.sample_shift = num as u32,
                                "ge" => g.entries_per_slot = num,
                                _ => g.gain = num,
                            }
                        }
                        _ => bail!(
                            "unknown tuning {k} in {item} (w, lo, hi, st, sp, c, d, p, g, mp, gs, ge, gg, ms, mr, me, mf, mm, aw, ap, bw, bp, cw, cp)"
                        ),
                    }
                }
                Kind::TunedS3Sketch(c)
            }
            Kind::Slot("wtinylfu") => {
                let mut c = WTinyLfuConfig::default();
                for (k, num) in values {
                    match k {
                        "w" => c.window_fraction = num,
                        "c" => c.sketch.counters_per_row = num,
                        "d" => c.sketch.doorkeeper_bits_per_row = num,
                        "p" => c.sketch.period_per_row = num,
                        _ => bail!("unknown tuning {k} in {item} (w, c, d, p)"),
                    }
                }
                Kind::TunedWTinyLfu(c)
            }
            Kind::Slot("s3fifo") => {
                let mut c = S3FifoConfig::default();
                for (k, num) in values {
                    match k {
                        "s" => c.small_fraction = num,
                        "g" => c.ghost_factor = num,
                        _ => bail!("unknown tuning {k} in {item} (s, g)"),
                    }
                }
                Kind::TunedS3Fifo(c)
            }
            _ => {
                bail!("only s3arc, s3sketch, wtinylfu and s3fifo take tuning overrides, not {item}")
            }
        };
        out.push(spec(item, tuned));
    }
    if out.is_empty() {
        bail!("no policies selected");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_all_and_tunings() -> Result<()> {
        let specs = parse_policies("lru,s3sketch:w=0.05:c=8")?;
        assert_eq!(specs[0].label, "lru");
        assert!(!specs[0].is_default());
        assert!(
            !specs[1].is_default(),
            "a tuned variant is not the shipped default"
        );
        assert!(parse_policies("all")?.iter().any(PolicySpec::is_default));
        assert!(parse_policies("all")?.iter().any(PolicySpec::is_opt));
        assert!(parse_policies("nope").is_err());
        assert!(parse_policies("lru:w=1").is_err());
        assert!(parse_policies("wtinylfu:z=1").is_err());
        assert!(parse_policies("s3fifo:s=0.2,wtinylfu:w=0.1").is_ok());
        Ok(())
    }
}
