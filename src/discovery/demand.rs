//! What a node joining with `--auto` should serve: the model asked for, else one the mesh wants,
//! else its most under-served model, else the largest catalog model that fits and the mesh lacks.
//! Pure: a function of the offer and the catalog's fit on this machine.

use super::offer::OfferContent;

/// A catalog model as the choice sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub size: u64,
    /// Fits this machine's memory at its default context.
    pub fits: bool,
}

/// The model to serve and why (printed for the user).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub model: String,
    pub reason: String,
}

pub fn choose_model(
    requested: Option<&str>,
    offer: Option<&OfferContent>,
    catalog: &[Candidate],
) -> Option<Choice> {
    let choice = |model: &str, reason: String| Choice {
        model: model.to_owned(),
        reason,
    };
    if let Some(m) = requested {
        return Some(choice(m, "asked for with --model".into()));
    }
    let fits = |name: &str| catalog.iter().any(|c| c.fits && c.name == name);
    if let Some(o) = offer {
        if let Some(w) = o.wanted.iter().find(|w| fits(w)) {
            return Some(choice(w, "the mesh wants it".into()));
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
        let c = choose_model(Some("mine"), Some(&o), &catalog()).unwrap();
        assert_eq!(c.model, "mine");
        // `huge` is wanted but does not fit; `medium` is wanted and fits.
        let c = choose_model(None, Some(&o), &catalog()).unwrap();
        assert_eq!(
            (c.model.as_str(), c.reason.as_str()),
            ("medium", "the mesh wants it")
        );
        let o = offer(
            vec![served("medium", 3, 12, 12), served("small", 2, 8, 1)],
            &[],
        );
        let c = choose_model(None, Some(&o), &catalog()).unwrap();
        assert_eq!(c.model, "small");
        assert_eq!(c.reason, "under-served: 1 of 8 slots free on 2 nodes");
    }

    #[test]
    fn a_well_served_mesh_gets_a_new_model_and_a_new_mesh_the_largest() {
        let o = offer(vec![served("small", 3, 12, 12)], &[]);
        let c = choose_model(None, Some(&o), &catalog()).unwrap();
        assert_eq!(c.model, "medium");
        let c = choose_model(None, None, &catalog()).unwrap();
        assert_eq!(c.model, "medium");
        assert_eq!(c.reason, "the largest catalog model that fits here");
        assert!(choose_model(None, None, &[cand("huge", 1, false)]).is_none());
    }
}
