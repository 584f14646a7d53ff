use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn end_flushes_before_next_at_every_invoke() {
    let now = t0();
    let mut s = FlushState::new(FlushStrategy::End, false, ms(1000));
    for i in 0..20 {
        let t = now + ms(i * 10);
        s.on_invoke(t);
        assert_eq!(
            decide(&s, t, Moment::Invoke),
            Decision::BeforeNext,
            "invoke {i}"
        );
        s.on_flush_started(t);
        s.on_flush_done(t, true);
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
    s.on_flush_done(now + ms(10), true);
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
    let mut s = FlushState::new(FlushStrategy::Adaptive, false, ms(1000));
    // Rare: one invocation a minute.
    for i in 0..6 {
        let t = now + Duration::from_secs(60 * i);
        s.on_invoke(t);
        assert_eq!(decide(&s, t, Moment::Invoke), Decision::BeforeNext);
        s.on_flush_started(t);
        s.on_flush_done(t, true);
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
            s.on_flush_done(t, true);
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
fn unhealthy_collector_never_blocks_next() {
    let now = t0();
    let mut s = FlushState::new(FlushStrategy::End, false, ms(1000));
    s.on_invoke(now);
    s.on_flush_started(now);
    s.on_flush_done(now + ms(5), false);
    let t = now + ms(100);
    s.on_invoke(t);
    assert_eq!(decide(&s, t, Moment::Invoke), Decision::Background);
    s.on_flush_started(t);
    assert_eq!(
        decide(&s, t, Moment::Invoke),
        Decision::Nothing,
        "one at a time"
    );
    s.on_flush_done(t, false);
    let later = t + UNHEALTHY_BACKOFF;
    assert_eq!(
        decide(&s, later, Moment::Invoke),
        Decision::BeforeNext,
        "retried after backoff"
    );
}

#[test]
fn continuous_mode_is_periodic_whatever_the_strategy() {
    let now = t0();
    for strategy in [FlushStrategy::Adaptive, FlushStrategy::End] {
        let mut s = FlushState::new(strategy, true, ms(1000));
        assert_eq!(decide(&s, now, Moment::Tick), Decision::Background);
        s.on_flush_started(now);
        s.on_flush_done(now, true);
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
    let mut s = FlushState::new(FlushStrategy::End, false, ms(1000));
    s.buffer_fill = 0.49;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Nothing);
    s.buffer_fill = 0.5;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Background);
    s.in_flight = true;
    assert_eq!(decide(&s, now, Moment::Tick), Decision::Nothing);
}
