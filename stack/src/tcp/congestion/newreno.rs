//! NewReno's window rules (RFC 5681 3.1): in congestion avoidance, one MSS per window of
//! acknowledged bytes (the byte-counting form of equation (3)); on a congestion event
//! `ssthresh = max(FlightSize / 2, 2 * SMSS)` (equation (4)).

use super::Controller;
use crate::time::Instant;

/// NewReno's state: bytes acknowledged towards the next +1 MSS in congestion avoidance.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NewReno {
    acc: u32,
}

impl Controller for NewReno {
    fn on_ack_ca(&mut self, cwnd: u32, acked: u32, mss: u32, _now: Instant, _srtt: u32) -> u32 {
        on_ack_ca(&mut self.acc, cwnd, acked, mss)
    }
    fn on_congestion(&mut self, _cwnd: u32, flight: u32, mss: u32, _now: Instant) -> u32 {
        self.acc = 0;
        ssthresh(flight, mss)
    }
    fn reset(&mut self) {
        self.acc = 0;
    }
}

/// Congestion avoidance: `acc` accumulates acknowledged bytes until a full cwnd's worth.
pub(super) fn on_ack_ca(acc: &mut u32, cwnd: u32, acked: u32, mss: u32) -> u32 {
    *acc = acc.saturating_add(acked);
    if *acc >= cwnd {
        *acc -= cwnd;
        cwnd.saturating_add(mss)
    } else {
        cwnd
    }
}

/// RFC 5681 equation (4).
pub(super) fn ssthresh(flight: u32, mss: u32) -> u32 {
    (flight / 2).max(2 * mss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mss_per_window_and_half_on_loss() {
        let mut acc = 0;
        let mut cwnd = 10_000;
        for _ in 0..10 {
            cwnd = on_ack_ca(&mut acc, cwnd, 1000, 1000);
        }
        assert_eq!(cwnd, 11_000);
        assert_eq!(ssthresh(20_000, 1000), 10_000);
        assert_eq!(ssthresh(1000, 1000), 2000);
    }
}
