//! `Member`'s tests: membership as one node sees it, events in, actions out.

use super::*;
use crate::mesh::proto::announce::tests::announcement;
use crate::mesh::state::peers::LeftBecause;
use iroh::SecretKey;

struct Node {
    key: SecretKey,
    member: Member,
    table: PeerTable,
    flood: FloodGuard,
}

impl Node {
    fn new() -> Self {
        let key = SecretKey::generate();
        Self {
            member: Member::new(key.public(), Timers::default()),
            key,
            table: PeerTable::default(),
            flood: FloodGuard::default(),
        }
    }

    fn on(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Member, &mut Cx) -> Vec<Action>,
    ) -> Vec<Action> {
        let mut cx = Cx {
            table: &mut self.table,
            flood: &mut self.flood,
            now,
            unix_micros: crate::util::time::unix_micros(),
        };
        f(&mut self.member, &mut cx)
    }
}

fn signed(key: &SecretKey, msg: &Message) -> Vec<u8> {
    announce::encode(key, msg)
}

fn ann(key: &SecretKey) -> Message {
    Message::Announce(announcement(key, &["m"], crate::util::time::unix_micros()))
}

#[test]
fn an_announcement_joins_its_author_and_learns_its_address() {
    let (mut a, b) = (Node::new(), SecretKey::generate());
    let now = Instant::now();
    let out = a.on(now, |m, cx| {
        m.received(cx, &signed(&b, &ann(&b)), b.public(), true)
    });
    assert!(out.contains(&Action::Learned(EndpointAddr::new(b.public()))));
    assert!(out.contains(&Action::Reshaped));
    assert!(out
        .iter()
        .any(|x| matches!(x, Action::Changed(c) if c.contains(&Change::Joined(b.public())))));
    // Relayed by someone else but claiming to come straight from its author: dropped.
    let forged = a.on(now, |m, cx| {
        m.received(
            cx,
            &signed(&b, &ann(&b)),
            SecretKey::generate().public(),
            true,
        )
    });
    assert!(forged.is_empty());
}

#[test]
fn gossip_connections_to_peers_long_out_of_the_active_view_are_strays() {
    let mut a = Node::new();
    let [n, former, other] = [(); 3].map(|_| SecretKey::generate().public());
    let t0 = Instant::now();
    a.on(t0, |m, cx| m.neighbour_up(cx, n));
    a.on(t0, |m, cx| m.neighbour_up(cx, former));
    a.on(t0, |m, cx| m.neighbour_down(cx, former));
    let later = t0 + Timers::default().stray;
    let open = [(n, t0), (former, t0), (other, t0), (other, later)];
    // Within the grace: a neighbour, a former one, a new connection stay.
    let just_opened = [(other, later - Duration::from_secs(1))];
    assert!(a.member.strays(later, &just_opened).is_empty());
    assert_eq!(a.member.strays(later, &open), vec![other]);
    // Once the sweep forgot the former neighbour, its connection is a stray too; a
    // neighbour's never is.
    a.on(later, |m, cx| m.sweep(cx, &[]));
    assert_eq!(a.member.strays(later, &open), vec![former, other]);
    // A stray that becomes a neighbour again is none.
    a.on(later, |m, cx| m.neighbour_up(cx, other));
    assert_eq!(a.member.strays(later, &open), vec![former]);
}

#[test]
fn a_new_neighbour_forces_an_announcement_and_a_roster_fetch_once() {
    let mut a = Node::new();
    let (n1, n2) = (
        SecretKey::generate().public(),
        SecretKey::generate().public(),
    );
    let now = Instant::now();
    assert_eq!(
        a.on(now, |m, cx| m.neighbour_up(cx, n1)),
        [Action::Announce, Action::FetchRoster(n1)]
    );
    let own = Fingerprint::of(&announcement(&a.key, &[], 1));
    // The first announcement with a neighbour to carry it goes to the whole mesh...
    assert_eq!(a.member.announce_due(now, own), Some(Audience::Mesh));
    assert_eq!(a.member.announce_due(now, own), None);
    // ...later neighbours are only greeted, once, after the forced gap.
    assert_eq!(
        a.on(now, |m, cx| m.neighbour_up(cx, n2)),
        [Action::Announce]
    );
    assert_eq!(a.member.announce_due(now, own), None);
    let later = now + FORCED_GAP;
    assert_eq!(
        a.member.announce_due(later, own),
        Some(Audience::Neighbours)
    );
    assert_eq!(a.member.announce_due(later, own), None);
}

#[test]
fn a_timed_out_peer_is_dropped_and_reported_a_lost_one_is_probed_first() {
    let (mut a, b, c) = (Node::new(), SecretKey::generate(), SecretKey::generate());
    let now = Instant::now();
    for k in [&b, &c] {
        a.on(now, |m, cx| {
            m.received(cx, &signed(k, &ann(k)), k.public(), true)
        });
    }
    let out = a.on(now, |m, cx| {
        m.sweep(cx, &[(b.public(), true), (c.public(), false)])
    });
    assert!(
        matches!(&out[0], Action::Changed(ch) if ch.contains(&Change::Left(b.public(), LeftBecause::Lost)))
    );
    assert!(matches!(out[1], Action::ReportDown { about, .. } if about == b.public()));
    assert_eq!(out[2], Action::Probe(c.public()));
    assert!(a.table.get(&c.public()).is_some());
    let out = a.on(now, |m, cx| m.probed(cx, c.public(), false));
    assert!(matches!(out.last(), Some(Action::ReportDown { about, .. }) if *about == c.public()));
    assert!(a.table.is_empty());
}

#[test]
fn a_down_report_about_this_node_is_refuted_with_an_announcement() {
    let (mut a, b) = (Node::new(), SecretKey::generate());
    let now = Instant::now();
    a.on(now, |m, cx| {
        m.received(cx, &signed(&b, &ann(&b)), b.public(), true)
    });
    let down = Message::Down {
        node: b.public(),
        seq: crate::util::time::unix_micros(),
        about: a.key.public(),
        about_seq: 1,
    };
    let out = a.on(now, |m, cx| {
        m.received(cx, &signed(&b, &down), b.public(), true)
    });
    assert_eq!(out, [Action::Announce]);
}

#[test]
fn a_flooding_neighbour_is_banned_and_leaves_the_table() {
    let (mut a, b) = (Node::new(), SecretKey::generate());
    let now = Instant::now();
    a.on(now, |m, cx| {
        m.received(cx, &signed(&b, &ann(&b)), b.public(), true)
    });
    let mut banned = false;
    for _ in 0..100 {
        let out = a.on(now, |m, cx| m.received(cx, b"junk", b.public(), true));
        if out.contains(&Action::Ban(b.public())) {
            banned = true;
            break;
        }
    }
    assert!(banned);
    assert!(a.table.is_empty());
}

#[test]
fn only_a_node_back_from_being_cut_off_dials_the_members_a_roster_leaves_out() {
    let mut a = Node::new();
    let [b, c, d] = [(); 3].map(|_| SecretKey::generate());
    let t0 = Instant::now();
    for k in [&b, &c, &d] {
        a.on(t0, |m, cx| {
            m.received(cx, &signed(k, &ann(k)), k.public(), true)
        });
    }
    let roster = |a: &mut Node, from: &SecretKey, listed: &[&SecretKey], at: Instant| {
        for k in listed {
            let bytes = Bytes::from(signed(k, &ann(k)));
            a.on(at, |m, cx| m.roster_entry(cx, bytes, from.public()));
        }
        a.on(at, |m, cx| m.roster_end(cx, from.public(), true))
    };
    // A newcomer's first neighbour: its roster is no list of the living (it missed nothing).
    let out = a.on(t0, |m, cx| m.neighbour_up(cx, b.public()));
    assert!(out.contains(&Action::FetchRoster(b.public())));
    assert!(roster(&mut a, &b, &[&c], t0).is_empty());
    // Cut off, then back: D, which the roster leaves out, is dialled; C is not.
    a.on(t0, |m, cx| m.neighbour_down(cx, b.public()));
    let t1 = t0 + crate::mesh::state::liveness::ROSTER_RECHECK;
    let out = a.on(t1, |m, cx| m.neighbour_up(cx, c.public()));
    assert!(out.contains(&Action::FetchRoster(c.public())));
    let out = roster(&mut a, &c, &[&b], t1);
    assert_eq!(out, [Action::Probe(d.public())]);
    // No answer: D goes, reported down.
    let out = a.on(t1, |m, cx| m.probed(cx, d.public(), false));
    assert!(out
        .iter()
        .any(|x| matches!(x, Action::ReportDown { about, .. } if *about == d.public())));
}

#[test]
fn former_neighbours_stay_bounded_when_neighbours_churn() {
    let mut a = Node::new();
    let t0 = Instant::now();
    for i in 0..MAX_FORMER + 10 {
        let id = SecretKey::generate().public();
        let now = t0 + Duration::from_millis(i as u64);
        a.on(now, |m, cx| m.neighbour_up(cx, id));
        a.on(now, |m, cx| m.neighbour_down(cx, id));
    }
    assert_eq!(a.member.sizes()[0], MAX_FORMER);
}

#[test]
fn after_an_incomplete_roster_the_retry_asks_another_neighbour_and_none_while_cut_off() {
    use crate::mesh::state::liveness::ROSTER_RECHECK;
    let mut a = Node::new();
    let [b, c] = [(); 2].map(|_| SecretKey::generate().public());
    let t0 = Instant::now();
    let fetches = |out: &[Action]| -> Vec<EndpointId> {
        out.iter()
            .filter_map(|x| match x {
                Action::FetchRoster(id) => Some(*id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(fetches(&a.on(t0, |m, cx| m.neighbour_up(cx, b))), [b]);
    a.on(t0, |m, cx| m.neighbour_up(cx, c));
    // B joined just before: its roster is incomplete. The retry goes to C, not asked yet.
    a.on(t0, |m, cx| m.roster_end(cx, b, false));
    assert!(!a.member.roster_complete());
    let t1 = t0 + ROSTER_RECHECK;
    assert_eq!(fetches(&a.on(t1, |m, cx| m.sweep(cx, &[]))), [c]);
    // C's is incomplete too: the next retry goes to the one asked longest ago, B.
    a.on(t1, |m, cx| m.roster_end(cx, c, false));
    let t2 = t1 + ROSTER_RECHECK * 2;
    assert_eq!(fetches(&a.on(t2, |m, cx| m.sweep(cx, &[]))), [b]);
    // Cut off: the retry due waits for the next neighbour rather than asking a former one.
    a.on(t2, |m, cx| m.roster_end(cx, b, false));
    a.on(t2, |m, cx| m.neighbour_down(cx, b));
    a.on(t2, |m, cx| m.neighbour_down(cx, c));
    let t3 = t2 + ROSTER_RECHECK * 8;
    assert!(fetches(&a.on(t3, |m, cx| m.sweep(cx, &[]))).is_empty());
    // A complete roster: complete from then on.
    let d = SecretKey::generate().public();
    assert_eq!(fetches(&a.on(t3, |m, cx| m.neighbour_up(cx, d))), [d]);
    a.on(t3, |m, cx| m.roster_end(cx, d, true));
    assert!(a.member.roster_complete());
}
