//! Every slot policy against a reference model on random traces: the capacity is never exceeded,
//! hits land only on resident keys and in the slot they were given, slots stay in range and are
//! never handed to two keys at once, and evictions name the key that held the slot. Also checks
//! that no online policy beats Belady's OPT on the same trace.

use std::collections::HashMap;

use engram_store_cache::policy::{self, MokaTinyLfu, Opt, POLICY_NAMES, SimPolicy, next_uses};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A skewed random trace: a few hot keys, a long tail, and bursts that repeat recent keys.
fn trace(rng: &mut StdRng, len: usize, keys: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::with_capacity(len);
    for _ in 0..len {
        let key = match rng.random_range(0..10) {
            0..=3 => rng.random_range(0..keys.min(8)),
            4..=5 if !out.is_empty() => out[out.len() - 1 - rng.random_range(0..out.len().min(5))],
            _ => rng.random_range(0..keys),
        };
        out.push(key);
    }
    out
}

#[test]
fn every_policy_agrees_with_the_model() {
    let mut rng = StdRng::seed_from_u64(42);
    for &name in POLICY_NAMES {
        for capacity in [0usize, 1, 2, 3, 10, 64] {
            for keys in [4u64, 50, 1000] {
                let mut p = policy::by_name(name, capacity).expect("known name");
                assert_eq!(p.name(), name);
                assert_eq!(p.capacity(), capacity);
                let mut model: HashMap<u64, u32> = HashMap::new();
                let mut owner: Vec<Option<u64>> = vec![None; capacity];
                for key in trace(&mut rng, 3000, keys) {
                    let ctx = format!("{name} capacity {capacity} keys {keys} key {key}");
                    match p.get(key) {
                        Some(slot) => assert_eq!(model.get(&key), Some(&slot), "{ctx}: hit"),
                        None => {
                            assert!(!model.contains_key(&key), "{ctx}: resident key missed");
                            if let Some(a) = p.insert(key) {
                                assert!((a.slot as usize) < capacity, "{ctx}: slot range");
                                let held = owner[a.slot as usize];
                                assert_eq!(held, a.evicted, "{ctx}: eviction names the owner");
                                if let Some(old) = a.evicted {
                                    assert_eq!(model.remove(&old), Some(a.slot), "{ctx}");
                                }
                                owner[a.slot as usize] = Some(key);
                                model.insert(key, a.slot);
                            }
                        }
                    }
                    assert_eq!(p.len(), model.len(), "{ctx}: len");
                    assert!(p.len() <= capacity, "{ctx}: capacity");
                    let probe = rng.random_range(0..keys);
                    assert_eq!(
                        p.contains(probe),
                        model.contains_key(&probe),
                        "{ctx}: contains"
                    );
                }
                assert!(p.metadata_bytes() >= std::mem::size_of::<usize>(), "{name}");
            }
        }
    }
}

#[test]
fn default_policy_is_listed_and_unknown_names_are_refused() {
    assert!(POLICY_NAMES.contains(&policy::DEFAULT_POLICY));
    assert_eq!(policy::default_policy(8).name(), policy::DEFAULT_POLICY);
    assert!(policy::by_name("nope", 8).is_none());
}

#[test]
fn no_policy_beats_opt() {
    let mut rng = StdRng::seed_from_u64(9);
    for capacity in [1usize, 5, 40] {
        let t = trace(&mut rng, 20_000, 500);
        let mut opt = Opt::new(capacity, next_uses(&t));
        let best = t.iter().filter(|&&k| opt.access(k)).count();
        let mut others: Vec<Box<dyn SimPolicy>> = vec![Box::new(MokaTinyLfu::new(capacity))];
        for &name in POLICY_NAMES {
            others.push(Box::new(policy::by_name(name, capacity).expect("known")));
        }
        for mut p in others {
            let hits = t.iter().filter(|&&k| p.access(k)).count();
            assert!(
                hits <= best,
                "{} {hits} > opt {best} at {capacity}",
                p.policy_name()
            );
            assert!(hits > 0, "{} never hits", p.policy_name());
        }
    }
}
