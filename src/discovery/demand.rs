//! What a node joining with `--auto` should serve: the model asked for, else one the mesh wants
//! (that fits here, else that a split over this node and the members that lend memory would
//! hold, fast enough), else its most under-served model, else the largest catalog model that
//! fits and the mesh lacks. Pure: a function of the offer, the catalog's fit on this machine and
//! the lending members' announcements.

use super::offer::OfferContent;
use crate::catalog::speed::Machine;
use crate::catalog::split::{self, Member};

/// A catalog model as the choice sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub size: u64,
    /// Fits this machine's memory at its default context (and decodes fast enough here).
    pub fits: bool,
    /// Does not fit this machine's memory at any context: only a split can serve it here (one
    /// that fits but decodes too slowly would be loaded whole, so it is never split).
    pub too_big: bool,
    /// Memory it needs, as the fit counts it.
    pub need_bytes: u64,
    /// Its layer count, when the catalog knows it.
    pub layers: Option<u32>,
    /// Bytes of weights one token reads (`catalog::speed::bytes_per_token`).
    pub bytes_per_token: u64,
}

/// What a split could draw on: this node, its machine, and the members that lend memory.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRoom {
    pub host: Member,
    pub machine: Machine,
    pub lenders: Vec<Member>,
    /// `--min-speed`: a split expected to decode slower is no choice.
    pub min_tokens_per_sec: f64,
}

/// The model to serve and why (printed for the user).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub model: String,
    pub reason: String,
    /// Served split (it does not fit here alone): the split expected.
    pub split: Option<SplitChoice>,
}

/// A split the choice counts on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitChoice {
    /// This node and the workers.
    pub parts: usize,
    pub tokens_per_sec: f64,
}

impl SplitRoom {
    /// The split of `c` this room allows, if it holds the model fast enough.
    fn split(&self, c: &Candidate) -> Option<SplitChoice> {
        let f = split::fit(
            c.need_bytes,
            c.layers,
            c.bytes_per_token,
            &self.host,
            &self.machine,
            &self.lenders,
        )
        .ok()?;
        (f.tokens_per_sec >= self.min_tokens_per_sec).then(|| SplitChoice {
            parts: f.plan.workers.len() + 1,
            tokens_per_sec: f.tokens_per_sec,
        })
    }
}

/// The model to serve. `room`: what a split could draw on (`None`: no split, e.g. before
/// joining); only a model the mesh wants is split.
pub fn choose_model(
    requested: Option<&str>,
    offer: Option<&OfferContent>,
    catalog: &[Candidate],
    room: Option<&SplitRoom>,
) -> Option<Choice> {
    let choice = |model: &str, reason: String| Choice {
        model: model.to_owned(),
        reason,
        split: None,
    };
    if let Some(m) = requested {
        return Some(choice(m, "asked for with --model".into()));
    }
    let fits = |name: &str| catalog.iter().any(|c| c.fits && c.name == name);
    if let Some(o) = offer {
        if let Some(w) = o.wanted.iter().find(|w| fits(w)) {
            return Some(choice(w, "the mesh wants it".into()));
        }
        let splits = |name: &str| {
            let c = catalog.iter().find(|c| c.name == name && c.too_big)?;
            room?.split(c)
        };
        if let Some((w, s)) = o.wanted.iter().find_map(|w| Some((w, splits(w)?))) {
            return Some(Choice {
                split: Some(s),
                ..choice(
                    w,
                    match s.parts - 1 {
                        1 => "the mesh wants it; too big for this node alone, it is split with \
                              1 member that lends memory"
                            .into(),
                        n => format!(
                            "the mesh wants it; too big for this node alone, it is split with \
                             {n} members that lend memory"
                        ),
                    },
                )
            });
        }
        // Most under-served first: fewest free slots per slot, then fewest hosts.
        let mut served: Vec<_> = o.models.iter().filter(|m| fits(&m.name)).collect();
        served.sort_by(|a, b| {
            let free = |m: &super::offer::ServedModel| m.free_slots as f64 / m.slots.max(1) as f64;
            free(a)
                .total_cmp(&free(b))
                .then(a.hosts.cmp(&b.hosts))
                .then(a.name.cmp(&b.name))
        });
        if let Some(m) = served
            .iter()
            .find(|m| m.hosts == 1 || m.free_slots * 2 < m.slots)
        {
            return Some(choice(
                &m.name,
                format!(
                    "under-served: {} of {} slots free on {} node{}",
                    m.free_slots,
                    m.slots,
                    m.hosts,
                    if m.hosts == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    let served = |name: &str| offer.is_some_and(|o| o.models.iter().any(|m| m.name == name));
    catalog
        .iter()
        .filter(|c| c.fits && !served(&c.name))
        .max_by(|a, b| a.size.cmp(&b.size).then(b.name.cmp(&a.name)))
        .map(|c| {
            let why = if offer.is_some() {
                "adds a model the mesh lacks: the largest catalog model that fits here"
            } else {
                "the largest catalog model that fits here"
            };
            choice(&c.name, why.into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::offer::ServedModel;

    fn cand(name: &str, size: u64, fits: bool) -> Candidate {
        Candidate {
            name: name.into(),
            size,
            fits,
            too_big: !fits,
            need_bytes: size,
            layers: Some(40),
            bytes_per_token: size,
        }
    }

    fn served(name: &str, hosts: u32, slots: u32, free: u32) -> ServedModel {
        ServedModel {
            name: name.into(),
            ctx: 4096,
            quant: None,
            hosts,
            slots,
            free_slots: free,
        }
    }

    fn offer(models: Vec<ServedModel>, wanted: &[&str]) -> OfferContent {
        let mut o = crate::discovery::score::tests::offer(1, "x", 4, None).content;
        o.models = models;
        o.wanted = wanted.iter().map(|w| w.to_string()).collect();
        o
    }

    fn catalog() -> Vec<Candidate> {
        vec![
            cand("small", 100, true),
            cand("medium", 500, true),
            cand("huge", 90_000, false),
        ]
    }

    #[test]
    fn asked_for_wins_then_wanted_then_under_served() {
        let o = offer(vec![served("small", 2, 8, 0)], &["huge", "medium"]);
        let c = choose_model(Some("mine"), Some(&o), &catalog(), None).unwrap();
        assert_eq!(c.model, "mine");
        // `huge` is wanted but does not fit; `medium` is wanted and fits.
        let c = choose_model(None, Some(&o), &catalog(), None).unwrap();
        assert_eq!(
            (c.model.as_str(), c.reason.as_str()),
            ("medium", "the mesh wants it")
        );
        let o = offer(
            vec![served("medium", 3, 12, 12), served("small", 2, 8, 1)],
            &[],
        );
        let c = choose_model(None, Some(&o), &catalog(), None).unwrap();
        assert_eq!(c.model, "small");
        assert_eq!(c.reason, "under-served: 1 of 8 slots free on 2 nodes");
    }

    #[test]
    fn a_well_served_mesh_gets_a_new_model_and_a_new_mesh_the_largest() {
        let o = offer(vec![served("small", 3, 12, 12)], &[]);
        let c = choose_model(None, Some(&o), &catalog(), None).unwrap();
        assert_eq!(c.model, "medium");
        let c = choose_model(None, None, &catalog(), None).unwrap();
        assert_eq!(c.model, "medium");
        assert_eq!(c.reason, "the largest catalog model that fits here");
        assert!(choose_model(None, None, &[cand("huge", 1, false)], None).is_none());
    }

    fn member(id: &str, free: u64, bandwidth: u64, rtt: Option<f64>) -> Member {
        Member {
            id: id.into(),
            free_bytes: free,
            tokens_per_second: 0.0,
            memory_bandwidth: bandwidth,
            rtt,
        }
    }

    /// This node with 1,000 bytes free on a machine reading 1,000 bytes a second (so `huge`,
    /// 90,000 bytes a token, decodes at 1/(90 / `CPU_EFFICIENCY`) tok/s), and the lenders given.
    fn room(lenders: Vec<Member>, min: f64) -> SplitRoom {
        SplitRoom {
            host: member("me", 1_000, 1_000, None),
            machine: Machine {
                memory_bandwidth: 1e9,
                gpu_bandwidth: None,
                measured_decode: None,
            },
            lenders,
            min_tokens_per_sec: min,
        }
    }

    #[test]
    fn a_wanted_model_too_big_for_this_node_is_split_when_lenders_hold_it_fast_enough() {
        let o = offer(vec![served("small", 3, 12, 12)], &["huge"]);
        // No lenders known: not split; the mesh gets a new model instead.
        let c = choose_model(None, Some(&o), &catalog(), None).unwrap();
        assert_eq!((c.model.as_str(), c.split), ("medium", None));
        let c = choose_model(None, Some(&o), &catalog(), Some(&room(vec![], 0.0))).unwrap();
        assert_eq!(c.model, "medium");
        // Lenders that hold it (1,000 + 50,000 + 40,000 ≥ 90,000 bytes), near and fast.
        let near = |id: &str, free: u64| member(id, free, 1_000_000_000, Some(0.0));
        let lenders = vec![near("a", 50_000), near("b", 40_000), near("c", 10)];
        let c = choose_model(
            None,
            Some(&o),
            &catalog(),
            Some(&room(lenders.clone(), 5.0)),
        )
        .unwrap();
        assert_eq!(c.model, "huge");
        let s = c.split.expect("split");
        assert_eq!(s.parts, 3);
        assert!(s.tokens_per_sec >= 5.0, "{s:?}");
        assert_eq!(
            c.reason,
            "the mesh wants it; too big for this node alone, it is split with 2 members that lend \
             memory"
        );
        // Expected too slow: not chosen.
        let slow = s.tokens_per_sec * 1.01;
        let c = choose_model(
            None,
            Some(&o),
            &catalog(),
            Some(&room(lenders.clone(), slow)),
        );
        assert_eq!(c.unwrap().model, "medium");
        // A wanted model that fits here still comes first; a model the mesh does not want
        // is never split.
        let o2 = offer(vec![], &["huge", "small"]);
        let c = choose_model(
            None,
            Some(&o2),
            &catalog(),
            Some(&room(lenders.clone(), 0.0)),
        );
        assert_eq!(c.unwrap().model, "small");
        let c = choose_model(None, None, &catalog(), Some(&room(lenders, 0.0))).unwrap();
        assert_eq!((c.model.as_str(), c.split), ("medium", None));
    }
}
