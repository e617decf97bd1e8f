//! Per-table weights on the VRAM budget (`serve --gpu-weight TABLE=W`, `[gpu_weights]` in the
//! config file). Each device's `--gpu-budget` is split among tables in proportion to their data
//! bytes times their weight (1 unless named), so a table on the critical path (an Engram model's
//! layer-1 table, whose rows are needed after one layer of compute) can be given a larger part of
//! the VRAM tier than one whose rows have many layers to arrive. The RAM budget's split does not
//! use them. Weights are valid by construction: each a positive finite number, on a valid table
//! name, no table named twice; a table that is not served is allowed (it may appear later).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::table::valid_table_name;

/// Weights in fixed point are at most this many units, so a table's weighted bytes fit in a
/// `u128` (bytes < 2^64 times at most 2^32) and weights 1 to 4 billion apart are told apart.
const WEIGHT_UNITS: f64 = (1u64 << 32) as f64;

/// Why a weight is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuWeightError {
    /// No `=` between table and weight.
    #[error("{given:?} has no '=': give TABLE=W, e.g. v41.layer1=2")]
    MissingEquals {
        /// What was given.
        given: String,
    },
    /// Nothing before the `=`.
    #[error("{given:?} names no table: give TABLE=W, e.g. v41.layer1=2")]
    EmptyTable {
        /// What was given.
        given: String,
    },
    /// A name no table can have.
    #[error("{table:?} is not a table name (1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.')")]
    BadTableName {
        /// The name given.
        table: String,
    },
    /// A weight that is not a number.
    #[error("weight {weight:?} of table {table:?} is not a number (e.g. 2 or 0.5)")]
    NotANumber {
        /// The table.
        table: String,
        /// The weight as given.
        weight: String,
    },
    /// Zero, negative, NaN or infinite.
    #[error(
        "weight {weight} of table {table:?} is not a positive finite number (1 is the default)"
    )]
    NotPositiveFinite {
        /// The table.
        table: String,
        /// The weight.
        weight: f64,
    },
    /// The same table given a weight twice.
    #[error("table {table:?} is given a weight twice ({first} and {second})")]
    Duplicate {
        /// The table.
        table: String,
        /// Its first weight.
        first: f64,
        /// Its second weight.
        second: f64,
    },
}

/// One table's weight, `TABLE=W` on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuWeight {
    table: String,
    weight: f64,
}

impl GpuWeight {
    /// `weight` for `table`, if the name is a valid table name and the weight positive and finite.
    pub fn new(table: impl Into<String>, weight: f64) -> Result<Self, GpuWeightError> {
        let table = table.into();
        if !valid_table_name(&table) {
            return Err(GpuWeightError::BadTableName { table });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(GpuWeightError::NotPositiveFinite { table, weight });
        }
        Ok(Self { table, weight })
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Its weight.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

impl FromStr for GpuWeight {
    type Err = GpuWeightError;

    /// `TABLE=W`, e.g. `v41.layer1=2` (spaces around either side are allowed).
    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let Some((table, weight)) = given.rsplit_once('=') else {
            return Err(GpuWeightError::MissingEquals {
                given: given.into(),
            });
        };
        let (table, weight) = (table.trim(), weight.trim());
        if table.is_empty() {
            return Err(GpuWeightError::EmptyTable {
                given: given.into(),
            });
        }
        let number = weight.parse().map_err(|_| GpuWeightError::NotANumber {
            table: table.into(),
            weight: weight.into(),
        })?;
        Self::new(table, number)
    }
}

impl fmt::Display for GpuWeight {
    /// `TABLE=W`: the form `--gpu-weight` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.table, self.weight)
    }
}

/// The weight of every table on the VRAM budget: those named, and 1 for every other table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuWeights(BTreeMap<String, f64>);

impl GpuWeights {
    /// `weights`, unless a table is named twice.
    pub fn new(weights: impl IntoIterator<Item = GpuWeight>) -> Result<Self, GpuWeightError> {
        let mut all = Self::default();
        for w in weights {
            if let Some(&first) = all.0.get(&w.table) {
                return Err(GpuWeightError::Duplicate {
                    table: w.table,
                    first,
                    second: w.weight,
                });
            }
            all.0.insert(w.table, w.weight);
        }
        Ok(all)
    }

    /// `other`'s weights over these: a table named in both takes `other`'s (flags over the
    /// config file).
    pub fn override_with(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    /// The weight of `table`: 1 unless named.
    pub fn weight(&self, table: &str) -> f64 {
        self.0.get(table).copied().unwrap_or(1.0)
    }

    /// The tables named and their weights, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(t, &w)| (t.as_str(), w))
    }

    /// True if no table is named (every weight is 1).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `bytes` of `table` weighted, the part of the VRAM budget it asks for: `bytes` times its
    /// weight in fixed point. Every weight is scaled by the one power of two that brings the
    /// largest (or 1, if larger) to at most 2^32 units, so weights such as 2, 0.5 or 1.5 keep
    /// their ratios exactly; with no weight named every part is bytes times 2^32, so the split
    /// is the one by bytes alone, exactly.
    pub(crate) fn weighted_bytes(&self, table: &str, bytes: u64) -> u128 {
        let largest = self.0.values().copied().fold(1.0, f64::max);
        // `largest` is finite and at least 1: the exponent is in 0..=1024, the scale a normal
        // power of two (exact to multiply by).
        let scale = 2f64.powi(32 - largest.log2().ceil() as i32);
        // In [1, 2^32]: a weight under 2^-32 of the largest still asks for a little.
        let units = (self.weight(table) * scale)
            .round()
            .clamp(1.0, WEIGHT_UNITS) as u128;
        u128::from(bytes) * units
    }
}

impl<'de> serde::Deserialize<'de> for GpuWeights {
    /// A table of table names to weights: `[gpu_weights]` with `"v41.layer1" = 2.0`, or
    /// `gpu_weights = { "v41.layer1" = 2 }`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let named = BTreeMap::<String, f64>::deserialize(d).map_err(|e| {
            serde::de::Error::custom(format!(
                "gpu_weights: expected a table of table names to weights, e.g. \
                 gpu_weights = {{ \"v41.layer1\" = 2.0 }} ({e})"
            ))
        })?;
        let weights = named
            .into_iter()
            .map(|(table, weight)| GpuWeight::new(table, weight))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| serde::de::Error::custom(format!("gpu_weights: {e}")))?;
        // A TOML table cannot name a key twice, so this does not fail.
        Self::new(weights).map_err(|e| serde::de::Error::custom(format!("gpu_weights: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_default_to_one() {
        let w: GpuWeight = "v41.layer1=2".parse().expect("a weight");
        assert_eq!((w.table(), w.weight()), ("v41.layer1", 2.0));
        assert_eq!(w.to_string(), "v41.layer1=2");
        let w: GpuWeight = " t = 0.5 ".parse().expect("spaces are allowed");
        assert_eq!((w.table(), w.weight()), ("t", 0.5));
        let all = GpuWeights::new([w, "u=3".parse().expect("u")]).expect("weights");
        assert_eq!(all.weight("t"), 0.5);
        assert_eq!(all.weight("u"), 3.0);
        assert_eq!(all.weight("other"), 1.0, "a table not named weighs 1");
        assert_eq!(all.iter().collect::<Vec<_>>(), [("t", 0.5), ("u", 3.0)]);
        assert!(GpuWeights::default().is_empty());
    }

    #[test]
    fn bad_weights_name_the_bad_value() {
        let err = |s: &str| s.parse::<GpuWeight>().expect_err(s);
        for (bad, says) in [
            ("v41.layer1", "\"v41.layer1\" has no '='"),
            ("=2", "\"=2\" names no table"),
            (" =2", "\" =2\" names no table"),
            ("bad name=2", "\"bad name\" is not a table name"),
            ("t=x", "weight \"x\" of table \"t\" is not a number"),
            ("t=", "weight \"\" of table \"t\" is not a number"),
            (
                "t=0",
                "weight 0 of table \"t\" is not a positive finite number",
            ),
            (
                "t=-1",
                "weight -1 of table \"t\" is not a positive finite number",
            ),
            (
                "t=-0",
                "weight -0 of table \"t\" is not a positive finite number",
            ),
            (
                "t=NaN",
                "weight NaN of table \"t\" is not a positive finite number",
            ),
            (
                "t=inf",
                "weight inf of table \"t\" is not a positive finite number",
            ),
            (
                "t=1e400",
                "weight inf of table \"t\" is not a positive finite number",
            ),
        ] {
            let e = err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let twice = GpuWeights::new(["t=2".parse().expect("t"), "t=3".parse().expect("t")]);
        assert_eq!(
            twice,
            Err(GpuWeightError::Duplicate {
                table: "t".into(),
                first: 2.0,
                second: 3.0
            })
        );
        let e = twice.expect_err("twice").to_string();
        assert!(
            e.contains("table \"t\" is given a weight twice (2 and 3)"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_file_table_by_table() {
        let mut file =
            GpuWeights::new(["a=2".parse().expect("a"), "b=3".parse().expect("b")]).expect("file");
        file.override_with(GpuWeights::new(["b=5".parse().expect("b")]).expect("flags"));
        assert_eq!(file.iter().collect::<Vec<_>>(), [("a", 2.0), ("b", 5.0)]);
    }

    #[test]
    fn weighted_bytes_are_bytes_times_the_weight_in_fixed_point() {
        let none = GpuWeights::default();
        assert_eq!(none.weighted_bytes("t", 1000), 1000 << 32);
        let w = GpuWeights::new(["hot=2".parse().expect("hot")]).expect("weights");
        assert_eq!(
            w.weighted_bytes("hot", 1000),
            1000 << 32,
            "the largest is 2^32"
        );
        assert_eq!(w.weighted_bytes("cold", 1000), 1000 << 31);
        let tiny = GpuWeights::new(["t=1e-30".parse().expect("t")]).expect("weights");
        assert_eq!(
            tiny.weighted_bytes("t", 7),
            7,
            "a positive weight asks for something"
        );
        let thirds = GpuWeights::new(["a=0.5".parse().expect("a"), "b=1.5".parse().expect("b")])
            .expect("weights");
        assert_eq!(
            thirds.weighted_bytes("a", 1),
            1 << 30,
            "scaled by 2^31, exactly"
        );
        assert_eq!(thirds.weighted_bytes("b", 1), 3 << 30);
        assert_eq!(thirds.weighted_bytes("c", 1), 1 << 31);
        for largest in [1e300, f64::MAX, 3.0, 1.0 + f64::EPSILON, 1023.9, 1024.0] {
            let w = GpuWeights::new([GpuWeight::new("t", largest).expect("t")]).expect("weights");
            let units = w.weighted_bytes("t", 1);
            assert!((1 << 31..=1 << 32).contains(&units), "{largest}: {units}");
            assert!(w.weighted_bytes("other", u64::MAX) >= u128::from(u64::MAX));
        }
    }

    #[test]
    fn toml_takes_a_table_of_weights() {
        #[derive(serde::Deserialize)]
        struct C {
            gpu_weights: GpuWeights,
        }
        let c: C = toml::from_str("[gpu_weights]\n\"v41.layer1\" = 2.0\n\"v41.layer14\" = 1")
            .expect("a table");
        assert_eq!(c.gpu_weights.weight("v41.layer1"), 2.0);
        assert_eq!(c.gpu_weights.weight("v41.layer14"), 1.0);
        let c: C = toml::from_str("gpu_weights = { t = 0.5 }").expect("an inline table");
        assert_eq!(c.gpu_weights.weight("t"), 0.5);
        for (bad, says) in [
            ("gpu_weights = { t = 0 }", "weight 0 of table \"t\""),
            ("gpu_weights = { t = -2 }", "weight -2 of table \"t\""),
            ("gpu_weights = { t = nan }", "weight NaN of table \"t\""),
            ("gpu_weights = { t = inf }", "weight inf of table \"t\""),
            (
                "gpu_weights = { t = \"x\" }",
                "expected a table of table names",
            ),
            (
                "gpu_weights = { \"a b\" = 2 }",
                "\"a b\" is not a table name",
            ),
            ("gpu_weights = 2", "expected a table of table names"),
        ] {
            let e = toml::from_str::<C>(bad).err().expect(bad).to_string();
            assert!(e.contains("gpu_weights") && e.contains(says), "{bad}: {e}");
        }
        assert!(
            toml::from_str::<C>("[gpu_weights]\nt = 1\nt = 2").is_err(),
            "TOML refuses a key twice"
        );
    }
}
