use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A state whose collector has answered an export (the start-up probe).
fn proven(strategy: FlushStrategy) -> FlushState {
    let mut s = FlushState::new(strategy, false, ms(1000));
    s.on_flush_done(true);
    s
}

#[test]
fn end_flushes_before_next_at_every_invoke() {
    let now = t0();
    let mut s = proven(FlushStrategy::End);
    for i in 0..20 {
        let t = now + ms(i * 10);
        s.on_invoke(t);
        assert_eq!(
            decide(&s, t, Moment::Invoke),
            Decision::BeforeNext,
            "invoke {i}"
        );
        s.on_flush_started(t);
        s.on_flush_done(true);
        assert_eq!(decide(&s, t, Moment::Tick), Decision::Nothing);
    }
}

#[test]
fn periodic_never_blocks_and_flushes_when_due() {
    let now = t0();
    let mut s = FlushState::new(FlushStrategy::Periodic(ms(500)), false, ms(1000));
    s.on_invoke(now);
    assert_eq!(
        decide(&s, now, Moment::Invoke),
        Decision::Background,
        "first flush is due"
    );
    s.on_flush_started(now);
    assert_eq!(
        decide(&s, now + ms(600), Moment::Tick),
        Decision::Nothing,
        "in flight"
    );
    s.on_flush_done(true);
    assert_eq!(decide(&s, now + ms(499), Moment::Tick), Decision::Nothing);
    assert_eq!(decide(&s, now + ms(499), Moment::Invoke), Decision::Nothing);
    assert_eq!(
        decide(&s, now + ms(500), Moment::Tick),
        Decision::Background
    );
    assert_eq!(s.next_wakeup(now + ms(100)), Some(now + ms(500)));
}

#[test]
fn adaptive_is_end_while_rare_and_periodic_when_frequent() {
    let now = t0();
    let mut s = proven(FlushStrategy::Adaptive);
    // Rare: one invocation a minute.
    for i in 0..6 {
        let t = now + Duration::from_secs(60 * i);
        s.on_invoke(t);
        assert_eq!(decide(&s, t, Moment::Invoke), Decision::BeforeNext);
        s.on_flush_started(t);
        s.on_flush_done(true);
    }
    assert_eq!(s.next_wakeup(now), None);
    // Frequent: ten a second.
    let base = now + Duration::from_secs(400);
    let mut decisions = Vec::new();
    for i in 0..20 {
        let t = base + ms(100 * i);
        s.on_invoke(t);
        decisions.push(decide(&s, t, Moment::Invoke));
        if decisions.last() != Some(&Decision::Nothing) {
            s.on_flush_started(t);
            s.on_flush_done(true);
        }
    }
    // Once the window holds only frequent arrivals, nothing blocks /next any more.
    assert!(decisions[..3].iter().all(|d| *d == Decision::BeforeNext));
    assert!(decisions[12..].iter().all(|d| *d != Decision::BeforeNext));
    // And the periodic flush fires off the critical path every ADAPTIVE_PERIOD.
    let last = base + ms(1900);
    assert_eq!(
        decide(&s, last + ADAPTIVE_PERIOD, Moment::Tick),
        Decision::Background
    );
    // Back to rare: a long gap pushes the mean up again.
    for i in 0..WINDOW as u64 {
        let t = last + Duration::from_secs(120 * (i + 1));
        s.on_invoke(t);
    }
    assert_eq!(
        decide(&s, last + Duration::from_secs(1200), Moment::Invoke),
        Decision::BeforeNext
    );
}

#[test]
fn unhealthy_collector_never_blocks_next_and_only_a_success_brings_it_back() {
    let now = t0();
    let mut s = proven(FlushStrategy::End);
    s.on_invoke(now);
    assert_eq!(decide(&s, now, Moment::Invoke), Decision::BeforeNext);
    s.on_flush_started(now);
    s.on_flush_done(false);
    assert_eq!(s.health, Health::Unhealthy);
    let t = now + ms(100);
    s.on_invoke(t);
    assert_eq!(decide(&s, t, Moment::Invoke), Decision::Background);
    s.on_flush_started(t);
    assert_eq!(
        decide(&s, t, Moment::Invoke),
        Decision::Nothing,
        "one probe at a time"
    );
    s.on_flush_done(false);
    // No clock brings it back: an hour later, still off the critical path.
    for i in 1..=120 {
        let later = t + Duration::from_secs(30 * i);
        s.on_invoke(later);
        assert_eq!(
            decide(&s, later, Moment::Invoke),
            Decision::Background,
            "{i}"
        );
        s.on_flush_started(later);
        s.on_flush_done(false);
    }
    // A background export that succeeds does.
    let back = t + Duration::from_secs(3700);
    s.on_invoke(back);
    assert_eq!(decide(&s, back, Moment::Invoke), Decision::Background);
    s.on_flush_started(back);
    s.on_flush_done(true);
    let next = back + Duration::from_secs(60);
    s.on_invoke(next);
    assert_eq!(decide(&s, next, Moment::Invoke), Decision::BeforeNext);
}

#[test]
fn a_new_environment_probes_in_the_background_before_it_holds_next() {
    let now = t0();
    for strategy in [FlushStrategy::Adaptive, FlushStrategy::End] {
        let mut s = FlushState::new(strategy, false, ms(1000));
        assert_eq!(s.health, Health::Unknown);
        assert!(s.probe_wanted(), "{strategy:?}: probe at start-up");
        s.on_invoke(now);
        assert_eq!(
            decide(&s, now, Moment::Invoke),
            Decision::Background,
            "{strategy:?}: unknown health never holds /next"
        );
        s.on_flush_started(now);
        assert!(!s.probe_wanted(), "one at a time");
        assert_eq!(decide(&s, now, Moment::Invoke), Decision::Nothing);
        s.on_flush_done(true);
        assert!(!s.probe_wanted(), "proven healthy: nothing to learn");
        let t = now + Duration::from_secs(60);
        s.on_invoke(t);
        assert_eq!(decide(&s, t, Moment::Invoke), Decision::BeforeNext);
        s.on_flush_started(t);
        s.on_flush_done(false);
        assert!(s.probe_wanted(), "unhealthy again: probe");
    }
    // Policies that never hold /next have nothing to learn.
    assert!(!FlushState::new(FlushStrategy::Periodic(ms(200)), false, ms(1000)).probe_wanted());
    assert!(!FlushState::new(FlushStrategy::End, true, ms(1000)).probe_wanted());
}

#[test]
fn continuous_mode_is_periodic_whatever_the_strategy() {
    let now = t0();
    for strategy in [FlushStrategy::Adaptive, FlushStrategy::End] {
        let mut s = FlushState::new(strategy, true, ms(1000));
        assert_eq!(decide(&s, now, Moment::Tick), Decision::Background);
        s.on_flush_started(now);
        s.on_flush_done(true);
        assert_eq!(decide(&s, now + ms(999), Moment::Tick), Decision::Nothing);
        assert_eq!(
            decide(&s, now + ms(1000), Moment::Tick),
            Decision::Background
        );
        assert_eq!(s.next_wakeup(now), Some(now + ms(1000)));
    }
    let s = FlushState::new(FlushStrategy::Periodic(ms(200)), true, ms(1000));
    assert_eq!(s.next_wakeup(now), Some(now));
}

#[test]
fn buffer_pressure_flushes_in_background() {
    let now = t0();
    let mut s = proven(FlushStrategy::End);
    s.buffer_fill = 0.49;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Nothing);
    s.buffer_fill = 0.5;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Background);
    s.in_flight = true;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Nothing);
}
