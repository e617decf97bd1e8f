//! Which policies to simulate: `--policies` is a comma-separated list of names (`all` for every
//! one), and the default policy also takes tuning overrides for experiments, as
//! `wtinylfu:w=0.02:c=6:d=4:p=10:m=3` (window fraction, counters, doorkeeper bits and aging period
//! per row, CLOCK counter ceiling). A plain name means the shipped tuning.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use engram_store_cache::policy::{
    self, DEFAULT_POLICY, MokaTinyLfu, Opt, POLICY_NAMES, Policy, SimPolicy, WTinyLfu,
    WTinyLfuConfig, WithPolicy,
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
    Tuned(WTinyLfuConfig),
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
            Kind::Tuned(config) => Box::new(WTinyLfu::with_config(rows, *config)),
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
        if kind != Kind::Slot("wtinylfu") {
            bail!("only wtinylfu takes tuning overrides, not {item}");
        }
        let mut config = WTinyLfuConfig::default();
        for t in tunings {
            let Some((k, v)) = t.split_once('=') else {
                bail!("tuning {t} in {item} is not KEY=VALUE");
            };
            let num: f64 = v.parse().with_context(|| format!("tuning {t} in {item}"))?;
            match k {
                "w" => config.window_fraction = num,
                "m" => config.clock_max = num as u8,
                "c" => config.sketch.counters_per_row = num,
                "d" => config.sketch.doorkeeper_bits_per_row = num,
                "p" => config.sketch.period_per_row = num,
                "s" => config.window_second_chance = num != 0.0,
                "h" => config.promote_window_hits = num != 0.0,
                "t" => config.admit_ties = num != 0.0,
                _ => bail!("unknown tuning {k} in {item} (w, m, c, d, p, s, h, t)"),
            }
        }
        out.push(spec(item, Kind::Tuned(config)));
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
        let specs = parse_policies("lru,wtinylfu:w=0.05:c=8")?;
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
        Ok(())
    }
}
