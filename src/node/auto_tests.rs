//! The `--auto` policy's rules, one test per rule (kept apart from the policy for its size).

use super::*;

type A = Action<&'static str>;

/// A policy for the rules other than verification (which has its own tests below).
fn policy(client: bool, publish: bool) -> Policy {
    Policy::new(Config {
        client,
        publish,
        verify_offers: false,
    })
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

fn found(p: &mut Policy, best: Option<&'static str>, now: Instant) -> Vec<A> {
    p.handle(Event::Found { best, now })
}

fn started(p: &mut Policy, peers: usize, now: Instant) -> Vec<A> {
    p.handle(Event::Started { peers, now })
}

fn refused(p: &mut Policy, mesh_refused: bool, now: Instant) -> Vec<A> {
    p.handle(Event::StartFailed { mesh_refused, now })
}

fn peers(p: &mut Policy, count: usize, now: Instant) -> Vec<A> {
    p.handle(Event::PeersChanged { count, now })
}

fn timer(p: &mut Policy, now: Instant) -> Vec<A> {
    p.handle(Event::Timer { now })
}

/// A policy that joined the offer "m" at `t0` and saw `n` other nodes then.
fn joined(mut p: Policy, n: usize, t0: Instant) -> Policy {
    found(&mut p, Some("m"), t0);
    started(&mut p, n, t0);
    p
}

#[test]
fn a_run_starts_by_browsing() {
    assert_eq!(policy(true, false).start::<&str>(), vec![A::Browse]);
    assert_eq!(policy(true, false).deadline(), None);
}

#[test]
fn an_offer_found_is_joined_without_publishing_unless_asked() {
    let t0 = Instant::now();
    for publish in [false, true] {
        let mut p = policy(false, publish);
        let offer = "m";
        assert_eq!(
            found(&mut p, Some(offer), t0),
            vec![A::Join { offer, publish }]
        );
    }
}

#[test]
fn a_client_with_no_offer_waits_retry_and_looks_again() {
    let t0 = Instant::now();
    let mut p = policy(true, false);
    let retry = RETRY;
    assert_eq!(
        found(&mut p, None, t0),
        vec![A::Say(Message::NoMeshYet { retry })]
    );
    assert_eq!(p.deadline(), Some(t0 + RETRY));
    assert_eq!(timer(&mut p, t0 + RETRY - Duration::from_millis(1)), vec![]);
    assert_eq!(timer(&mut p, t0 + RETRY), vec![A::Browse]);
    assert_eq!(p.deadline(), None);
}

#[test]
fn a_serving_node_with_no_offer_starts_a_public_mesh_and_publishes_it() {
    let t0 = Instant::now();
    let mut p = policy(false, false);
    let acts = found(&mut p, None, t0);
    assert_eq!(acts, vec![A::Say(Message::NoMeshFits), A::StartNewMesh]);
    assert_eq!(started(&mut p, 0, t0), vec![A::ChooseAndLoadModel]);
    // Published from the start: being alone in its own mesh is no reason to act.
    assert_eq!(p.deadline(), None);
    assert_eq!(peers(&mut p, 0, at(t0, 60)), vec![]);
    assert_eq!(timer(&mut p, at(t0, 60)), vec![]);
    assert!(!p.stopped());
}

#[test]
fn a_joined_client_loads_nothing_and_a_serving_node_chooses_a_model() {
    let t0 = Instant::now();
    let mut p = policy(true, false);
    found(&mut p, Some("m"), t0);
    assert_eq!(started(&mut p, 1, t0), vec![]);
    let mut p = policy(false, false);
    found(&mut p, Some("m"), t0);
    assert_eq!(started(&mut p, 1, t0), vec![A::ChooseAndLoadModel]);
}

#[test]
fn a_node_with_nothing_to_serve_stays_in_a_joined_mesh_as_a_client() {
    let t0 = Instant::now();
    let mut p = joined(policy(false, false), 1, t0);
    let acts = p.handle::<&str>(Event::NothingToServe);
    assert_eq!(acts, vec![A::Say(Message::ClientFromNowOn)]);
    assert!(!p.stopped());
    // From then on the client's rules: alone for the grace, it leaves and looks again (a
    // serving node would stay and publish its mesh).
    assert_eq!(peers(&mut p, 0, at(t0, 5)), vec![]);
    let acts = timer(&mut p, at(t0, 5) + EMPTY_GRACE);
    assert_eq!(acts, vec![A::Leave, A::Say(Message::Emptied), A::Browse]);
    // The next mesh it joins, it joins as a client: it chooses no model there.
    found(&mut p, Some("n"), at(t0, 20));
    assert_eq!(started(&mut p, 1, at(t0, 20)), vec![]);
}

#[test]
fn a_node_with_nothing_to_serve_in_a_mesh_of_its_own_ends_the_run() {
    let t0 = Instant::now();
    let mut p = policy(false, false);
    found(&mut p, None, t0);
    assert_eq!(started(&mut p, 0, t0), vec![A::ChooseAndLoadModel]);
    assert_eq!(p.handle::<&str>(Event::NothingToServe), vec![A::Fail]);
    assert!(p.stopped());
}

#[test]
fn a_refusal_by_the_mesh_pauses_and_looks_again() {
    let t0 = Instant::now();
    let mut p = policy(true, false);
    found(&mut p, Some("m"), t0);
    let retry = RETRY;
    assert_eq!(
        refused(&mut p, true, t0),
        vec![A::Say(Message::CannotJoin { retry })]
    );
    assert_eq!(p.deadline(), Some(t0 + RETRY));
    assert_eq!(timer(&mut p, t0 + RETRY), vec![A::Browse]);
    assert!(!p.stopped());
}

#[test]
fn a_local_failure_to_join_ends_the_run() {
    let t0 = Instant::now();
    let mut p = policy(false, false);
    found(&mut p, Some("m"), t0);
    assert_eq!(refused(&mut p, false, t0), vec![A::Fail]);
    assert!(p.stopped());
    assert_eq!(p.deadline(), None);
}

#[test]
fn any_failure_to_start_a_mesh_of_its_own_ends_the_run() {
    let t0 = Instant::now();
    let mut p = policy(false, false);
    found(&mut p, None, t0);
    assert_eq!(refused(&mut p, true, t0), vec![A::Fail]);
    assert!(p.stopped());
}

#[test]
fn a_client_alone_for_the_grace_leaves_and_looks_again() {
    let t0 = Instant::now();
    let mut p = joined(policy(true, false), 1, t0);
    assert_eq!(p.deadline(), None);
    assert_eq!(peers(&mut p, 0, at(t0, 5)), vec![]);
    assert_eq!(p.deadline(), Some(at(t0, 5) + EMPTY_GRACE));
    // A later event while still alone keeps the first moment.
    peers(&mut p, 0, at(t0, 8));
    assert_eq!(p.deadline(), Some(at(t0, 5) + EMPTY_GRACE));
    let early = at(t0, 5) + EMPTY_GRACE - Duration::from_millis(1);
    assert_eq!(timer(&mut p, early), vec![]);
    let acts = timer(&mut p, at(t0, 5) + EMPTY_GRACE);
    assert_eq!(acts, vec![A::Leave, A::Say(Message::Emptied), A::Browse]);
    assert_eq!(p.deadline(), None);
    // Mesh events that arrive after leaving change nothing.
    assert_eq!(peers(&mut p, 0, at(t0, 60)), vec![]);
}

#[test]
fn a_client_that_sees_no_one_on_joining_counts_the_grace_from_the_join() {
    let t0 = Instant::now();
    let mut p = joined(policy(true, false), 0, t0);
    assert_eq!(p.deadline(), Some(t0 + EMPTY_GRACE));
    assert_eq!(timer(&mut p, t0 + EMPTY_GRACE)[0], A::Leave);
}

#[test]
fn a_peer_back_within_the_grace_cancels_the_leave() {
    let t0 = Instant::now();
    let mut p = joined(policy(true, false), 0, t0);
    assert_eq!(peers(&mut p, 1, at(t0, 9)), vec![]);
    assert_eq!(p.deadline(), None);
    assert_eq!(timer(&mut p, at(t0, 10)), vec![]);
    // Alone again: the grace starts over.
    peers(&mut p, 0, at(t0, 12));
    assert_eq!(p.deadline(), Some(at(t0, 12) + EMPTY_GRACE));
    assert_eq!(timer(&mut p, at(t0, 21)), vec![]);
    assert_eq!(timer(&mut p, at(t0, 22))[0], A::Leave);
}

#[test]
fn a_peer_count_that_arrives_past_the_grace_acts_at_once() {
    let t0 = Instant::now();
    let mut p = joined(policy(true, false), 0, t0);
    assert_eq!(peers(&mut p, 0, at(t0, 11))[0], A::Leave);
}

#[test]
fn a_serving_node_left_alone_publishes_its_mesh_exactly_once() {
    let t0 = Instant::now();
    let mut p = joined(policy(false, false), 1, t0);
    peers(&mut p, 0, at(t0, 1));
    assert_eq!(p.deadline(), Some(at(t0, 1) + EMPTY_GRACE));
    assert_eq!(timer(&mut p, at(t0, 10)), vec![]);
    assert_eq!(timer(&mut p, at(t0, 11)), vec![A::StartPublishing]);
    // Published now: no more deadlines, nothing more when alone again, and it stays.
    assert_eq!(p.deadline(), None);
    assert_eq!(timer(&mut p, at(t0, 30)), vec![]);
    peers(&mut p, 1, at(t0, 31));
    assert_eq!(peers(&mut p, 0, at(t0, 32)), vec![]);
    assert_eq!(p.deadline(), None);
    assert_eq!(peers(&mut p, 0, at(t0, 60)), vec![]);
    assert!(!p.stopped());
}

#[test]
fn a_serving_node_that_joined_with_publish_never_publishes_again() {
    let t0 = Instant::now();
    let mut p = joined(policy(false, true), 0, t0);
    assert_eq!(p.deadline(), None);
    assert_eq!(timer(&mut p, at(t0, 60)), vec![]);
}

#[test]
fn ctrl_c_stops_in_every_state() {
    let t0 = Instant::now();
    let looking = policy(true, false);
    let mut pausing = policy(true, false);
    found(&mut pausing, None, t0);
    let mut starting = policy(true, false);
    found(&mut starting, Some("m"), t0);
    let joined_client = joined(policy(true, false), 0, t0);
    let joined_serving = joined(policy(false, false), 0, t0);
    for mut p in [looking, pausing, starting, joined_client, joined_serving] {
        assert_eq!(p.handle::<&str>(Event::CtrlC), vec![A::Stop]);
        assert!(p.stopped());
        assert_eq!(p.deadline(), None);
        // Nothing after the end, not even a second Ctrl-C.
        assert_eq!(p.handle::<&str>(Event::CtrlC), vec![]);
        assert_eq!(timer(&mut p, at(t0, 99)), vec![]);
    }
}

#[test]
fn events_out_of_turn_are_ignored() {
    let t0 = Instant::now();
    let mut p = policy(true, false);
    // Looking: no timer, start result or peer count means anything.
    assert_eq!(timer(&mut p, t0), vec![]);
    assert_eq!(started(&mut p, 0, t0), vec![]);
    assert_eq!(peers(&mut p, 0, t0), vec![]);
    // Joined: a stray browse result does not join again.
    let mut p = joined(policy(true, false), 1, t0);
    assert_eq!(found(&mut p, Some("other"), t0), vec![]);
}

fn verifying(client: bool) -> Policy {
    Policy::new(Config {
        client,
        publish: false,
        verify_offers: true,
    })
}

fn checked(p: &mut Policy, contradiction: Option<&str>, now: Instant) -> Vec<A> {
    p.handle(Event::OfferChecked {
        contradiction: contradiction.map(String::from),
        now,
    })
}

#[test]
fn a_joined_offer_is_checked_against_gossip_once_after_verify_after() {
    let t0 = Instant::now();
    for client in [true, false] {
        let mut p = joined(verifying(client), 1, t0);
        assert_eq!(p.deadline(), Some(t0 + VERIFY_AFTER));
        // Peers coming and going do not check early: gossip needs its time.
        assert_eq!(peers(&mut p, 2, at(t0, 3)), vec![]);
        let early = t0 + VERIFY_AFTER - Duration::from_millis(1);
        assert_eq!(timer(&mut p, early), vec![]);
        assert_eq!(timer(&mut p, t0 + VERIFY_AFTER), vec![A::CheckOffer]);
        let acts = checked(&mut p, None, t0 + VERIFY_AFTER);
        assert_eq!(acts, vec![A::Say(Message::OfferConfirmed)]);
        // Checked once: no more deadlines, and a late answer changes nothing.
        assert_eq!(p.deadline(), None);
        assert_eq!(timer(&mut p, at(t0, 60)), vec![]);
        assert_eq!(checked(&mut p, Some("late"), at(t0, 61)), vec![]);
        assert!(!p.stopped());
    }
}

#[test]
fn an_offer_gossip_contradicts_is_distrusted_left_and_another_mesh_looked_for() {
    let t0 = Instant::now();
    for client in [true, false] {
        let mut p = joined(verifying(client), 1, t0);
        assert_eq!(timer(&mut p, t0 + VERIFY_AFTER), vec![A::CheckOffer]);
        let acts = checked(&mut p, Some("claims 64 serving nodes"), t0 + VERIFY_AFTER);
        let reason = "claims 64 serving nodes".to_string();
        assert_eq!(acts, vec![A::Distrust { reason }, A::Leave, A::Browse]);
        assert_eq!(p.deadline(), None);
        // Looking again: the next offer found is joined (and checked in turn).
        let later = at(t0, 11);
        assert_eq!(
            found(&mut p, Some("n"), later),
            vec![A::Join {
                offer: "n",
                publish: false
            }]
        );
        started(&mut p, 1, later);
        assert_eq!(p.deadline(), Some(later + VERIFY_AFTER));
    }
}

#[test]
fn a_mesh_of_its_own_is_never_checked() {
    let t0 = Instant::now();
    let mut p = verifying(false);
    found(&mut p, None, t0);
    started(&mut p, 0, t0);
    assert_eq!(p.deadline(), None);
    assert_eq!(timer(&mut p, at(t0, 60)), vec![]);
    assert_eq!(checked(&mut p, Some("x"), at(t0, 61)), vec![]);
}

#[test]
fn the_empty_grace_and_the_check_share_one_deadline_and_both_act() {
    let t0 = Instant::now();
    // A serving node alone from the join: at the deadline it publishes and checks.
    let mut p = joined(verifying(false), 0, t0);
    assert_eq!(p.deadline(), Some(t0 + EMPTY_GRACE.min(VERIFY_AFTER)));
    let acts = timer(&mut p, t0 + EMPTY_GRACE.max(VERIFY_AFTER));
    assert_eq!(acts, vec![A::StartPublishing, A::CheckOffer]);
    // A client alone for the grace leaves anyway: nothing left to check.
    let mut p = joined(verifying(true), 0, t0);
    let acts = timer(&mut p, t0 + EMPTY_GRACE.max(VERIFY_AFTER));
    assert_eq!(acts, vec![A::Leave, A::Say(Message::Emptied), A::Browse]);
    assert_eq!(checked(&mut p, Some("x"), at(t0, 30)), vec![]);
}

#[test]
fn the_grace_and_the_retry_stay_ten_seconds() {
    assert_eq!(EMPTY_GRACE, Duration::from_secs(10));
    assert_eq!(RETRY, Duration::from_secs(10));
}
