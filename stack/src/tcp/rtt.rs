//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Samples come from segments that were never retransmitted (Karn's rule, RFC 6298 3), timed in
//! microseconds by the send time each queued segment records. Back-off doubles the RTO on each
//! expiry (RFC 6298 5.5) and a new sample computed after the back-off replaces it (5.7 note).

use crate::time::Duration;

/// Estimator state; times in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rtt {
    pub srtt: u32,
    pub rttvar: u32,
    /// Current RTO including back-off.
    pub rto: u32,
    pub min_rto: u32,
    pub max_rto: u32,
    /// Consecutive back-offs.
    pub backoff: u8,
    pub sampled: bool,
}

/// Clock granularity G (RFC 6298 2): our clock is microseconds; the wheel ticks in 1 ms.
const G_US: u32 = 1_000;

impl Rtt {
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        Rtt {
            srtt: 0,
            rttvar: 0,
            rto: initial.as_micros().min(u32::MAX as u128) as u32,
            min_rto: min.as_micros().min(u32::MAX as u128) as u32,
            max_rto: max.as_micros().min(u32::MAX as u128) as u32,
            backoff: 0,
            sampled: false,
        }
    }

    /// Adds a measurement `r` (µs).
    pub fn sample(&mut self, r: u32) {
        let r = r.max(1);
        if !self.sampled {
            // RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2.
            self.srtt = r;
            self.rttvar = r / 2;
            self.sampled = true;
        } else {
            // RFC 6298 2.3, alpha = 1/8, beta = 1/4.
            let diff = self.srtt.abs_diff(r);
            self.rttvar = ((3 * u64::from(self.rttvar) + u64::from(diff)) / 4) as u32;
            self.srtt = ((7 * u64::from(self.srtt) + u64::from(r)) / 8) as u32;
        }
        self.backoff = 0;
        self.rto = self.base_rto();
    }

    /// RTO = SRTT + max(G, 4 RTTVAR), clamped (RFC 6298 2.4, 2.5).
    fn base_rto(&self) -> u32 {
        let v = u64::from(self.srtt) + u64::from(G_US.max(self.rttvar.saturating_mul(4)));
        (v.min(u64::from(self.max_rto)) as u32).max(self.min_rto)
    }

    /// RFC 6298 5.5: back the timer off.
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
        self.rto = self.rto.saturating_mul(2).min(self.max_rto);
    }

    pub fn rto(&self) -> Duration {
        Duration::from_micros(u64::from(self.rto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_then_smoothing_then_backoff() {
        let ms = Duration::from_millis;
        let mut r = Rtt::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(r.rto(), ms(1000), "RFC 6298 2.1: initial RTO 1 s");
        r.sample(100_000);
        assert_eq!((r.srtt, r.rttvar), (100_000, 50_000));
        assert_eq!(r.rto(), ms(300));
        r.sample(100_000);
        assert_eq!((r.srtt, r.rttvar), (100_000, 37_500));
        assert_eq!(r.rto(), ms(250));
        for _ in 0..60 {
            r.sample(1_000);
        }
        assert_eq!(r.rto(), ms(200), "clamped to the minimum");
        r.back_off();
        r.back_off();
        assert_eq!(r.rto(), ms(800));
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), ms(60_000), "clamped to the maximum");
    }
}
