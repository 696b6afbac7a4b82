//! CUBIC (RFC 9438): window growth as a cubic function of time since the last congestion event,
//! with the Reno-friendly region (4.3) and fast convergence (4.7). Units: segments (f32), seconds.

use super::Controller;
use crate::time::Instant;

/// RFC 9438 4.6: multiplicative decrease factor.
const BETA: f32 = 0.7;
/// RFC 9438 5: C = 0.4.
const C: f32 = 0.4;

/// CUBIC's state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cubic {
    /// W_max: window before the last reduction (segments).
    w_max: f32,
    /// W_lastmax for fast convergence.
    w_last_max: f32,
    /// K: time to reach W_max again (s).
    k: f32,
    /// Start of the current congestion-avoidance epoch (µs), 0 = not started.
    epoch_us: u64,
    /// W_est of the Reno-friendly region (segments).
    w_est: f32,
    /// cwnd at the epoch start (segments).
    cwnd_epoch: f32,
}

impl Controller for Cubic {
    fn on_ack_ca(&mut self, cwnd: u32, acked: u32, mss: u32, now: Instant, srtt_us: u32) -> u32 {
        let mss_f = mss as f32;
        let cw = cwnd as f32 / mss_f;
        let now_us = now.total_micros().max(1);
        if self.epoch_us == 0 {
            // RFC 9438 4.2: a new epoch starts at the first ACK of congestion avoidance.
            self.epoch_us = now_us;
            self.cwnd_epoch = cw;
            self.w_est = cw;
            if self.w_max <= cw {
                self.k = 0.0;
                self.w_max = cw;
            } else {
                // RFC 9438 eq. 2: K = cbrt((W_max - cwnd_epoch) / C).
                self.k = ((self.w_max - cw) / C).cbrt();
            }
        }
        let t = (now_us - self.epoch_us) as f32 / 1e6 + srtt_us as f32 / 1e6;
        // RFC 9438 eq. 1: W_cubic(t) = C (t - K)^3 + W_max (evaluated one RTT ahead, 4.4).
        let target = C * (t - self.k).powi(3) + self.w_max;
        // RFC 9438 4.3: W_est += alpha * segments_acked / cwnd, alpha = 3(1-beta)/(1+beta).
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * (acked as f32 / mss_f) / cw;
        let new = if self.w_est > target {
            self.w_est
        } else {
            // RFC 9438 4.4/4.5: cwnd += (target - cwnd) / cwnd per segment acked, capped at 1.5x.
            let target = target.min(1.5 * cw);
            if target > cw {
                cw + (target - cw) / cw * (acked as f32 / mss_f)
            } else {
                cw
            }
        };
        let bytes = (new.max(cw) * mss_f) as u32;
        bytes.max(cwnd)
    }

    fn on_congestion(&mut self, cwnd: u32, _flight: u32, mss: u32, _now: Instant) -> u32 {
        let cw = cwnd as f32 / mss as f32;
        // RFC 9438 4.7 fast convergence.
        if cw < self.w_last_max {
            self.w_last_max = cw;
            self.w_max = cw * (1.0 + BETA) / 2.0;
        } else {
            self.w_last_max = cw;
            self.w_max = cw;
        }
        self.epoch_us = 0;
        // RFC 9438 4.6: ssthresh = cwnd * beta (cwnd, not flight size, as Linux).
        (cw * BETA * mss as f32) as u32
    }

    fn reset(&mut self) {
        self.epoch_us = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_by_beta_then_grows_back_to_w_max_around_k() {
        let mss = 1000;
        let mut c = Cubic::default();
        let ss = c.on_congestion(100_000, 100_000, mss, Instant::ZERO);
        assert_eq!(ss, 70_000);
        let mut cwnd = ss;
        let mut t = Instant::from_millis(1);
        // K = cbrt(30 / 0.4) ~ 4.2 s; after ~4.2 s cwnd is back near 100 segments (RTT 100 ms:
        // a window's worth of ACKs every 100 ms).
        for _ in 0..4200 {
            cwnd = c.on_ack_ca(cwnd, cwnd / 100, mss, t, 0);
            t = t + crate::time::Duration::from_millis(1);
        }
        assert!((95_000..=115_000).contains(&cwnd), "cwnd {cwnd}");
        // Plateau then convex growth beyond W_max.
        for _ in 0..3000 {
            cwnd = c.on_ack_ca(cwnd, cwnd / 100, mss, t, 0);
            t = t + crate::time::Duration::from_millis(1);
        }
        assert!((105_000..125_000).contains(&cwnd), "cwnd {cwnd}");
    }
}
