//! The simulator's view of a policy: one call per access that says hit or miss. Every slot
//! [`Policy`] is one (get, then insert on a miss); so are policies that are not slot-based, such
//! as the moka baseline and the offline optimum, which only the simulator runs.

use super::Policy;

/// A cache policy as the simulator drives it.
pub trait SimPolicy {
    /// Short name as used on the command line and in CSV output (for a slot policy, its
    /// [`Policy::name`]; the methods are named apart so that both traits can be in scope).
    fn policy_name(&self) -> &'static str;
    /// Records an access to `key`, admitting it on a miss if the policy wants it; true on a hit.
    fn access(&mut self, key: u64) -> bool;
    /// Exact bytes of state the policy accounts for itself, or `None` for a policy that cannot
    /// (a library cache whose internals are private); the simulator also measures live heap.
    fn accounted_bytes(&self) -> Option<usize>;
}

impl<P: Policy + ?Sized> SimPolicy for P {
    fn policy_name(&self) -> &'static str {
        self.name()
    }

    fn access(&mut self, key: u64) -> bool {
        if self.get(key).is_some() {
            return true;
        }
        self.insert(key);
        false
    }

    fn accounted_bytes(&self) -> Option<usize> {
        Some(self.metadata_bytes())
    }
}
