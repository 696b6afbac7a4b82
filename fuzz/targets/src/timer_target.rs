//! The TCP timer wheel (`cnet_stack::timer::TimerWheel`) against a list model.

use crate::input::Input;
use cnet_stack::timer::{TimerId, TimerWheel};
use cnet_stack::Instant;

/// An armed timer of the model.
struct Armed {
    key: u32,
    id: TimerId,
    /// Deadline in ticks: the requested time rounded up to a tick, never before the wheel's
    /// current tick.
    tick: u64,
}

/// Offsets (microseconds) the fuzzer picks from: the TCP timers' scales, the wheel's level
/// boundaries, and anything.
fn offset(inp: &mut Input<'_>) -> u64 {
    let b = inp.u8();
    let raw = u64::from(inp.u32());
    match b % 8 {
        0 => raw % 100,
        1 => raw % 100_000,
        2 => raw % 10_000_000,
        3 => raw * 1000,
        4 => raw << 16,
        5 => (1u64 << (6 * (u64::from(b >> 3) % 7) + 6)).wrapping_add(raw % 4096),
        6 => (raw << 32) | u64::from(inp.u32()),
        _ => u64::MAX - raw,
    }
}

/// Timer wheel: the first byte picks the tick (1 µs, 1 ms, 10 ms or 7 µs), then operations:
/// insert (at any offset from now, past ones included), cancel, reschedule, advance by an
/// offset, advance to `next_deadline`, and time going backwards. After every step the wheel must
/// agree with a list of armed timers: the same length, `deadline(id)` equal to the model's
/// deadline, `advance(now)` firing exactly the timers due at `now`'s tick, `next_deadline` a lower
/// bound of the earliest deadline (and present exactly when something is armed), and advancing to
/// `next_deadline` repeatedly fires the earliest timer within a bounded number of steps.
pub fn timer(data: &[u8]) {
    let mut inp = Input::new(data);
    let tick_us = [1u64, 1000, 10_000, 7][usize::from(inp.u8() % 4)];
    let mut w = TimerWheel::new(tick_us);
    let mut model: Vec<Armed> = Vec::new();
    // The wheel's current tick as the model sees it: the largest tick any advance reached.
    let mut elapsed = 0u64;
    let mut now = u64::from(inp.u16()) * 1000;
    let mut key = 0u32;
    let mut out = Vec::new();
    let mut ops = 0;
    let advance = |w: &mut TimerWheel,
                   model: &mut Vec<Armed>,
                   elapsed: &mut u64,
                   out: &mut Vec<u32>,
                   to: u64| {
        let to_tick = to / tick_us;
        out.clear();
        w.advance(Instant::from_micros(to), out);
        *elapsed = (*elapsed).max(to_tick);
        let mut due: Vec<u32> = model
            .iter()
            .filter(|a| a.tick <= to_tick)
            .map(|a| a.key)
            .collect();
        model.retain(|a| a.tick > to_tick);
        due.sort_unstable();
        out.sort_unstable();
        assert_eq!(
            *out, due,
            "timers fired by advance({to} µs), tick {tick_us} µs"
        );
        // Nothing is left due: the stack relies on this to sleep until `next_deadline`. (Except
        // at the end of time, where a deadline's tick is past the last representable instant.)
        if let Some(t) = w.next_deadline().filter(|t| t.total_micros() != u64::MAX) {
            assert!(
                t.total_micros() / tick_us > to_tick,
                "next_deadline {t:?} not after advance({to} µs)"
            );
        }
    };
    while !inp.is_empty() && ops < 512 {
        ops += 1;
        match inp.u8() % 8 {
            0..=2 => {
                let at = if inp.bool() {
                    now.saturating_add(offset(&mut inp))
                } else {
                    now.saturating_sub(offset(&mut inp))
                };
                key += 1;
                let id = w.insert(key, Instant::from_micros(at));
                let tick = at.div_ceil(tick_us).max(elapsed);
                model.push(Armed { key, id, tick });
            }
            3 => {
                if model.is_empty() {
                    continue;
                }
                let i = usize::from(inp.u8()) % model.len();
                let a = model.swap_remove(i);
                w.cancel(a.id);
                // Cancelling again (a stale id) must be harmless while the slot is not reused.
                if inp.bool() {
                    w.cancel(a.id);
                }
            }
            4 => {
                if model.is_empty() {
                    continue;
                }
                let i = usize::from(inp.u8()) % model.len();
                let at = now.saturating_add(offset(&mut inp));
                w.reschedule(model[i].id, Instant::from_micros(at));
                model[i].tick = at.div_ceil(tick_us).max(elapsed);
            }
            5 => {
                now = now.saturating_add(offset(&mut inp));
                advance(&mut w, &mut model, &mut elapsed, &mut out, now);
            }
            6 => {
                // Time may go backwards (a clock step): nothing already passed fires twice, nothing
                // fires early.
                now = now.saturating_sub(offset(&mut inp));
                advance(&mut w, &mut model, &mut elapsed, &mut out, now);
            }
            _ => {
                // Wake-ups at `next_deadline`, as the stack's service loop does: the earliest
                // timer fires within a few of them (each wake-up at a lower bound only cascades),
                // if it is within the wheel's span; one farther away moves one turn of the top
                // level per wake-up.
                let Some(first) = model.iter().map(|a| a.tick).min() else {
                    continue;
                };
                // (A deadline past the last representable instant is never reached.)
                let within_span = first.saturating_sub(elapsed) < (1 << 36) - (1 << 30)
                    && first <= u64::MAX / tick_us;
                let before = model.len();
                for _ in 0..16 {
                    let Some(t) = w.next_deadline() else { break };
                    now = now.max(t.total_micros());
                    advance(&mut w, &mut model, &mut elapsed, &mut out, now);
                    if model.len() < before {
                        break;
                    }
                }
                assert!(
                    model.len() < before || !within_span,
                    "16 wake-ups at next_deadline did not reach the earliest timer (tick {first})"
                );
            }
        }
        assert_eq!(w.len(), model.len(), "armed timers");
        assert_eq!(w.is_empty(), model.is_empty());
        let earliest = model.iter().map(|a| a.tick).min();
        let next = w.next_deadline().map(|t| t.total_micros());
        assert_eq!(next.is_some(), earliest.is_some(), "next_deadline present");
        if let (Some(n), Some(e)) = (next, earliest) {
            assert!(
                n <= e.saturating_mul(tick_us),
                "next_deadline {n} µs after the earliest timer (tick {e})"
            );
        }
        for a in &model {
            assert_eq!(
                w.deadline(a.id).map(|t| t.total_micros()),
                Some(a.tick.saturating_mul(tick_us)),
                "deadline of timer {}",
                a.key
            );
        }
    }
}
