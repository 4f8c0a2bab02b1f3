//! What `mesh relay` stores: the write policy. [`Admission`] (size and kind) and
//! [`check_deletion`] are pure decisions; [`Policy`] applies them inside nostr-relay-builder,
//! looking up in the store who wrote the events a deletion names.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use nostr::{Event, JsonUtil, PublicKey};
use nostr_relay_builder::builder::{PolicyResult, WritePolicy};
use nostr_relay_builder::prelude::NostrDatabase;

use super::ip_rate::ip_key;
use super::{RelayOptions, DELETION_KIND};
use crate::discovery::invite::INVITE_KIND;
use crate::discovery::offer::OFFER_KIND;

/// The write policy: which events the relay stores. Pure; [`Admission::check`] is the decision.
#[derive(Debug, Clone)]
pub struct Admission {
    pub max_event_bytes: usize,
    /// Kinds accepted; `None` accepts all.
    pub kinds: Option<BTreeSet<u16>>,
}

impl Admission {
    pub fn new(opts: &RelayOptions) -> Self {
        Admission {
            max_event_bytes: opts.max_event_bytes,
            kinds: (!opts.any_kind)
                .then(|| BTreeSet::from([OFFER_KIND, DELETION_KIND, INVITE_KIND])),
        }
    }

    /// `Err` holds the reason sent back in `OK` (after the relay's `blocked: ` prefix).
    pub fn check(&self, kind: u16, json_bytes: usize) -> Result<(), String> {
        if json_bytes > self.max_event_bytes {
            return Err(format!(
                "event is {json_bytes} bytes, larger than this relay's limit of {} bytes",
                self.max_event_bytes
            ));
        }
        match &self.kinds {
            Some(kinds) if !kinds.contains(&kind) => Err(format!(
                "kind {kind} not accepted: this relay takes mesh offers ({OFFER_KIND}), deletions ({DELETION_KIND}) and join-code rendezvous events ({INVITE_KIND})"
            )),
            _ => Ok(()),
        }
    }
}

/// A NIP-09 deletion may only name its author's own events: `owners` are the authors of the
/// events and coordinates it names (those the relay knows).
pub fn check_deletion(author: &PublicKey, owners: &[PublicKey]) -> Result<(), String> {
    match owners.iter().find(|owner| *owner != author) {
        Some(other) => Err(format!(
            "a deletion may only name its author's own events, this one names an event of {other}"
        )),
        None => Ok(()),
    }
}

/// [`Admission`] and [`check_deletion`] as the relay's write policy; looks up the authors of
/// the events a deletion names in the relay's store.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) rules: Admission,
    pub(super) database: Arc<dyn NostrDatabase>,
    pub(super) per_ip: std::sync::Mutex<super::ip_rate::IpRate>,
}

impl WritePolicy for Policy {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        addr: &'a SocketAddr,
    ) -> nostr::util::BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            let key = ip_key(addr.ip());
            let allowed = self
                .per_ip
                .lock()
                .map(|mut r| r.allow(key, std::time::Instant::now()))
                .unwrap_or(true);
            if !allowed {
                return PolicyResult::Reject(format!(
                    "too many events from {key}; try again in a minute"
                ));
            }
            if let Err(why) = self.rules.check(event.kind.as_u16(), event.as_json().len()) {
                return PolicyResult::Reject(why);
            }
            if event.kind.as_u16() == DELETION_KIND {
                let mut owners: Vec<PublicKey> =
                    event.tags.coordinates().map(|c| c.public_key).collect();
                for id in event.tags.event_ids() {
                    if let Ok(Some(target)) = self.database.event_by_id(id).await {
                        owners.push(target.pubkey);
                    }
                }
                if let Err(why) = check_deletion(&event.pubkey, &owners) {
                    return PolicyResult::Reject(why);
                }
            }
            PolicyResult::Accept
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DEFAULT_MAX_EVENT_BYTES;

    fn mesh_only(max: usize) -> Admission {
        Admission::new(&RelayOptions {
            max_event_bytes: max,
            ..RelayOptions::default()
        })
    }

    #[test]
    fn offers_and_deletions_within_the_limit_are_admitted() {
        let a = mesh_only(1000);
        assert_eq!(a.check(OFFER_KIND, 1000), Ok(()));
        assert_eq!(a.check(DELETION_KIND, 10), Ok(()));
    }

    #[test]
    fn events_over_the_size_limit_are_refused_with_the_sizes() {
        let why = mesh_only(1000).check(OFFER_KIND, 1001).unwrap_err();
        assert!(
            why.contains("1001 bytes") && why.contains("limit of 1000"),
            "{why}"
        );
    }

    #[test]
    fn other_kinds_are_refused_unless_any_kind() {
        let why = mesh_only(1000).check(1, 10).unwrap_err();
        assert!(why.starts_with("kind 1 not accepted"), "{why}");
        let any = Admission::new(&RelayOptions {
            any_kind: true,
            ..RelayOptions::default()
        });
        assert_eq!(any.check(1, 10), Ok(()));
        assert!(any.check(1, DEFAULT_MAX_EVENT_BYTES + 1).is_err());
    }

    #[test]
    fn deletions_may_name_only_the_authors_own_events() {
        let me = nostr::Keys::generate().public_key();
        let other = nostr::Keys::generate().public_key();
        assert_eq!(check_deletion(&me, &[]), Ok(()));
        assert_eq!(check_deletion(&me, &[me, me]), Ok(()));
        let why = check_deletion(&me, &[me, other]).unwrap_err();
        assert!(why.contains(&other.to_string()), "{why}");
    }
}
