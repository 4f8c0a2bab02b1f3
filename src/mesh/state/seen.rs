//! Models seen in the mesh: every model some peer serves now or served in the last
//! [`SEEN_FOR`], so that a request for it with no host gets 503 "unavailable" rather than 404
//! "not found". Pure and bounded: at most [`MAX_SEEN`] names, the oldest forgotten first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Most model names remembered.
pub const MAX_SEEN: usize = 4096;
/// How long a model nobody serves any more is remembered.
pub const SEEN_FOR: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct SeenModels {
    /// Model name → the last time some peer served it.
    last: BTreeMap<String, Instant>,
}

impl SeenModels {
    /// Some peer serves `model` at `now`.
    pub fn saw(&mut self, model: &str, now: Instant) {
        if let Some(at) = self.last.get_mut(model) {
            *at = now;
            return;
        }
        if self.last.len() >= MAX_SEEN {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(m, _)| m.clone());
            if let Some(m) = oldest {
                self.last.remove(&m);
            }
        }
        self.last.insert(model.to_owned(), now);
    }

    /// Refreshes the models served now and forgets those unserved for longer than [`SEEN_FOR`].
    pub fn prune(&mut self, served: &BTreeSet<String>, now: Instant) {
        for m in served {
            if let Some(at) = self.last.get_mut(m) {
                *at = now;
            }
        }
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) <= SEEN_FOR);
    }

    pub fn contains(&self, model: &str) -> bool {
        self.last.contains_key(model)
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_remembered_while_served_and_for_a_while_after() {
        let mut s = SeenModels::default();
        let t0 = Instant::now();
        s.saw("m", t0);
        let served = BTreeSet::from(["m".to_owned()]);
        // Served all along: kept however long.
        s.prune(&served, t0 + 2 * SEEN_FOR);
        assert!(s.contains("m"));
        // Then nobody serves it: kept for SEEN_FOR, then forgotten.
        s.prune(&BTreeSet::new(), t0 + 3 * SEEN_FOR);
        assert!(s.contains("m"));
        s.prune(&BTreeSet::new(), t0 + 3 * SEEN_FOR + Duration::from_secs(1));
        assert!(!s.contains("m") && s.is_empty());
    }

    #[test]
    fn a_flood_of_names_stays_under_the_cap_and_keeps_the_newest() {
        let mut s = SeenModels::default();
        let t0 = Instant::now();
        for i in 0..3 * MAX_SEEN as u64 {
            s.saw(&format!("sybil-{i}"), t0 + Duration::from_millis(i));
        }
        assert_eq!(s.len(), MAX_SEEN);
        assert!(s.contains(&format!("sybil-{}", 3 * MAX_SEEN - 1)));
        assert!(!s.contains("sybil-0"));
    }
}
