//! `Liveness`'s tests: the announcement schedule, rosters, probes, reports and suspicion.

use super::*;
use crate::mesh::proto::announce::tests::announcement;
use iroh::SecretKey;

fn timers() -> Timers {
    Timers::default()
}

fn id() -> EndpointId {
    SecretKey::generate().public()
}

#[test]
fn a_node_announces_at_start_then_only_on_change_or_refresh() {
    let k = SecretKey::generate();
    let t0 = Instant::now();
    let mut s = Schedule::new(timers());
    let fp = Fingerprint::of(&announcement(&k, &["m"], 1));
    assert!(s.due(t0, fp));
    s.sent(t0, fp);
    // Nothing changed: silent until the refresh (the seq alone is no change).
    let same = Fingerprint::of(&announcement(&k, &["m"], 2));
    assert_eq!(same, fp);
    assert!(!s.due(t0 + Duration::from_secs(60), same));
    assert!(!s.due(t0 + timers().refresh - Duration::from_millis(1), same));
    assert!(s.due(t0 + timers().refresh, same));
    // A model loaded: at once, but never twice within the forced gap.
    let more = Fingerprint::of(&announcement(&k, &["m", "n"], 3));
    assert!(!s.due(t0 + FORCED_GAP / 2, more));
    assert!(s.due(t0 + FORCED_GAP, more));
}

#[test]
fn load_changes_wait_for_the_load_gap_and_forcing_announces_at_once() {
    let k = SecretKey::generate();
    let t0 = Instant::now();
    let mut s = Schedule::new(timers());
    let mut a = announcement(&k, &["m"], 1);
    let fp = Fingerprint::of(&a);
    s.sent(t0, fp);
    a.models[0].free_slots = 0;
    let busy = Fingerprint::of(&a);
    assert_eq!(busy.shape, fp.shape);
    assert_ne!(busy.load, fp.load);
    let gap = timers().load_gap;
    assert!(!s.due(t0 + gap - Duration::from_millis(1), busy));
    assert!(s.due(t0 + gap, busy));
    s.force();
    assert!(s.due(t0 + FORCED_GAP, fp));
    s.sent(t0 + FORCED_GAP, fp);
    assert!(!s.due(t0 + FORCED_GAP * 2, fp));
}

#[test]
fn the_first_neighbour_is_asked_for_the_roster_again_soon_after_then_one_per_gap() {
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    let (sweep, neighbour, back) = (RosterCue::Sweep, RosterCue::Neighbour, RosterCue::Back);
    assert!(!l.roster_due(now, sweep), "no neighbour yet");
    assert!(l.roster_due(now, neighbour));
    assert!(!l.roster_due(now + ROSTER_RECHECK / 2, neighbour));
    // The recheck comes at a sweep, with no new neighbour.
    let again = now + ROSTER_RECHECK;
    assert!(l.roster_due(again, sweep));
    assert!(!l.roster_due(again + ROSTER_GAP / 2, neighbour));
    assert!(!l.roster_due(again + ROSTER_GAP, sweep));
    assert!(l.roster_due(again + ROSTER_GAP, neighbour));
    // Back from being cut off: the gap is the recheck's.
    let later = again + ROSTER_GAP;
    assert!(!l.roster_due(later + ROSTER_RECHECK / 2, back));
    assert!(l.roster_due(later + ROSTER_RECHECK, back));
    assert!(!l.roster_due(later + ROSTER_RECHECK, back));
}

#[test]
fn a_roster_that_did_not_come_is_asked_again_later_and_later() {
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    let sweep = RosterCue::Sweep;
    assert!(l.roster_due(now, RosterCue::Neighbour));
    // The first ask failed: asked again at the first sweep after the recheck's time.
    l.roster_failed();
    assert!(!l.roster_due(now + ROSTER_RECHECK / 2, sweep));
    let retry = now + ROSTER_RECHECK;
    assert!(l.roster_due(retry, sweep));
    // That one came: the planned second ask follows as if the first had just come.
    l.roster_received(true);
    assert!(!l.roster_due(retry + ROSTER_RECHECK / 2, sweep));
    let second = retry + ROSTER_RECHECK;
    assert!(l.roster_due(second, sweep));
    assert!(!l.roster_due(second + ROSTER_GAP, sweep), "no more unasked");
    // Failures in a row are retried for good, each gap twice the one before, at most
    // ROSTER_RETRY_MAX.
    let mut at = second;
    let mut gap = ROSTER_RECHECK;
    for _ in 0..8 {
        l.roster_failed();
        assert!(!l.roster_due(at + gap - Duration::from_millis(1), sweep));
        at += gap;
        assert!(l.roster_due(at, sweep), "retried after {gap:?}");
        gap = (gap * 2).min(ROSTER_RETRY_MAX);
    }
    assert_eq!(gap, ROSTER_RETRY_MAX);
    // A roster that comes resets the gap.
    l.roster_received(true);
    l.roster_failed();
    assert!(l.roster_due(at + ROSTER_RECHECK, sweep));
}

#[test]
fn an_incomplete_roster_is_asked_again_until_a_complete_one_comes_or_for_a_bounded_time() {
    let now = Instant::now();
    let sweep = RosterCue::Sweep;
    let mut l = Liveness::new(timers());
    assert!(!l.roster_complete());
    assert!(l.roster_due(now, RosterCue::Neighbour));
    // Its first neighbour joined just before it: asked again as after a failure, the gap
    // doubling (the recheck waits for the retry's gap).
    l.roster_received(false);
    assert!(!l.roster_complete());
    let retry = now + ROSTER_RECHECK;
    assert!(l.roster_due(retry, sweep));
    l.roster_received(false);
    assert!(!l.roster_due(retry + ROSTER_RECHECK, sweep));
    let retry = retry + ROSTER_RECHECK * 2;
    assert!(l.roster_due(retry, sweep));
    // A complete one: this node is complete; the recheck follows, then no more asks.
    l.roster_received(true);
    assert!(l.roster_complete());
    assert!(l.roster_due(retry + ROSTER_RECHECK, sweep));
    l.roster_received(false);
    assert!(
        !l.roster_due(retry + ROSTER_RETRY_MAX * 4, sweep),
        "complete already"
    );

    // No member has a complete table (the mesh's starter left): after INCOMPLETE_ROSTERS
    // incomplete ones it stops asking and counts as complete.
    let mut l = Liveness::new(timers());
    let mut at = now;
    assert!(l.roster_due(at, RosterCue::Neighbour));
    for _ in 1..INCOMPLETE_ROSTERS {
        l.roster_received(false);
        assert!(!l.roster_complete());
        at += ROSTER_RETRY_MAX;
        assert!(l.roster_due(at, sweep));
    }
    l.roster_received(false);
    assert!(l.roster_complete());
    // The recheck the retries stood in for, then no more.
    assert!(l.roster_due(at + ROSTER_RECHECK, sweep));
    assert!(!l.roster_due(at + ROSTER_RETRY_MAX * 2, sweep));

    // A node that started the mesh is complete from the start.
    let mut l = Liveness::new(timers());
    l.started_mesh();
    assert!(l.roster_complete());
}

#[test]
fn a_full_table_that_refused_a_stranger_checks_its_stalest_peers_for_a_while() {
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    let full = MAX_PEERS;
    assert_eq!(l.pressure(0, full, now).0, 0, "no stranger refused");
    assert_eq!(l.pressure(1, full, now).0, MAX_PROBES);
    l.signal(id(), Signal::Lost, true, now);
    let (free, busy) = l.pressure(0, full, now + PRESSURE / 2);
    assert_eq!((free, busy.len()), (MAX_PROBES - 1, 1));
    // Enough room again, or the pressure is over: no more dials.
    assert_eq!(l.pressure(0, full - full / 8 - 1, now).0, 0);
    assert_eq!(l.pressure(0, full, now + PRESSURE).0, 0);
}

#[test]
fn down_reports_stay_within_their_budget() {
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    let sent = (0..100).filter(|_| l.may_report(now)).count();
    assert_eq!(sent, REPORT_BURST as usize);
    assert!(!l.may_report(now + Duration::from_millis(100)));
    assert!(l.may_report(now + Duration::from_millis(600)));
    // Over a minute: the refill rate, whatever is asked.
    let sent = (0..6000)
        .filter(|i| l.may_report(now + Duration::from_millis(1000 + 10 * i)))
        .count();
    assert!(
        sent <= (REPORTS_PER_SEC * 61.0) as usize + REPORT_BURST as usize,
        "{sent}"
    );
}

#[test]
fn a_timed_out_connection_means_gone_and_a_lost_one_is_probed_once() {
    let (a, b) = (id(), id());
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    assert_eq!(l.signal(a, Signal::TimedOut, true, now), Verdict::Gone);
    assert_eq!(l.signal(b, Signal::Lost, true, now), Verdict::Probe);
    assert_eq!(l.signal(b, Signal::Lost, true, now), Verdict::Nothing);
    assert_eq!(l.answered(b, true), Verdict::Nothing);
    assert_eq!(l.signal(b, Signal::Lost, true, now), Verdict::Probe);
    assert_eq!(l.answered(b, false), Verdict::Gone);
    // An answer nobody asked for, and signals about strangers, change nothing.
    assert_eq!(l.answered(b, false), Verdict::Nothing);
    assert_eq!(l.signal(a, Signal::TimedOut, false, now), Verdict::Nothing);
    assert_eq!(l.signal(a, Signal::Lost, false, now), Verdict::Nothing);
    assert_eq!(l.sizes(), [0, 0]);
}

#[test]
fn probes_are_bounded_and_forgotten_when_they_never_answer() {
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    for _ in 0..MAX_PROBES * 2 {
        l.signal(id(), Signal::Lost, true, now);
    }
    assert_eq!(l.sizes()[0], MAX_PROBES);
    let probe = timers().probe;
    l.prune(now + probe);
    assert_eq!(l.sizes()[0], MAX_PROBES);
    l.prune(now + probe * 3);
    assert_eq!(l.sizes()[0], 0);
}

#[test]
fn a_report_about_this_node_is_refuted_and_a_refuted_suspect_stays() {
    let (me, x, reporter) = (id(), id(), id());
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    assert_eq!(l.report(me, 5, me, true, None, now), Report::Refute);
    let _ = reporter;
    assert_eq!(l.report(x, 5, me, true, Some(5), now), Report::Suspect);
    assert!(l.is_suspected(&x));
    let suspect = timers().suspect;
    // Not yet due; then due, but X announced (seq 6) meanwhile: it stays, unsuspected.
    assert!(l.suspicions_due(now + suspect / 2, |_| Some(5)).is_empty());
    assert!(l.suspicions_due(now + suspect, |_| Some(6)).is_empty());
    assert!(!l.is_suspected(&x));
    // Reported again, silent this time: gone.
    assert_eq!(l.report(x, 6, me, true, Some(6), now), Report::Suspect);
    assert_eq!(l.suspicions_due(now + suspect, |_| Some(6)), vec![x]);
    // Reported, refuted, reported again just before the first deadline: the second report
    // gets its own time to be refuted.
    let y = id();
    assert_eq!(l.report(y, 1, me, true, Some(1), now), Report::Suspect);
    let late = now + suspect - Duration::from_millis(1);
    assert_eq!(l.report(y, 2, me, true, Some(2), late), Report::Suspect);
    assert!(l.suspicions_due(now + suspect, |_| Some(2)).is_empty());
    assert_eq!(l.suspicions_due(late + suspect, |_| Some(2)), vec![y]);
    // A suspect that left meanwhile is not reported gone twice.
    assert_eq!(l.report(x, 6, me, true, Some(6), now), Report::Suspect);
    assert!(l.suspicions_due(now + suspect, |_| None).is_empty());
}

#[test]
fn reports_from_strangers_about_strangers_or_older_than_our_news_are_ignored() {
    let (me, x) = (id(), id());
    let now = Instant::now();
    let mut l = Liveness::new(timers());
    assert_eq!(l.report(x, 5, me, false, Some(5), now), Report::Ignore);
    assert_eq!(l.report(x, 5, me, true, None, now), Report::Ignore);
    // The reporter knew X at seq 4; X announced seq 5 since (its refutation, say).
    assert_eq!(l.report(x, 4, me, true, Some(5), now), Report::Ignore);
    // A report naming a future seq suspects X only at what we know: X's next
    // announcement still refutes it.
    assert_eq!(
        l.report(x, u64::MAX, me, true, Some(5), now),
        Report::Suspect
    );
    assert!(l
        .suspicions_due(now + timers().suspect, |_| Some(6))
        .is_empty());
    assert_eq!(l.sizes(), [0, 0]);
}
