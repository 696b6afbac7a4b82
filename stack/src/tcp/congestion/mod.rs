//! Congestion control (RFC 5681 framework), chosen per socket: NewReno (RFC 5681, RFC 6582) or
//! CUBIC (RFC 9438).
//!
//! The connection owns `cwnd` and `ssthresh` and runs loss recovery itself (fast retransmit,
//! NewReno partial ACKs, RFC 6675 SACK recovery); an algorithm only decides how the window grows
//! in congestion avoidance and how far it drops on a congestion event.

mod cubic;
mod newreno;

pub(crate) use cubic::Cubic;

use crate::time::Instant;

/// A congestion control algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// NewReno: additive increase, halve on loss (RFC 5681, RFC 6582).
    NewReno,
    /// CUBIC (RFC 9438): the default, as in Linux.
    #[default]
    Cubic,
}

/// The hooks an algorithm implements.
pub(crate) trait Controller {
    /// Congestion avoidance: `acked` bytes were newly acknowledged; returns the new cwnd.
    fn on_ack_ca(&mut self, cwnd: u32, acked: u32, mss: u32, now: Instant, srtt_us: u32) -> u32;
    /// A congestion event (fast retransmit or RTO): returns the new ssthresh.
    fn on_congestion(&mut self, cwnd: u32, flight: u32, mss: u32, now: Instant) -> u32;
    /// Forget the growth epoch (after an RTO, or idle).
    fn reset(&mut self);
}

/// The per-connection window state and algorithm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cc {
    pub cwnd: u32,
    pub ssthresh: u32,
    pub algo: Algo,
}

/// Algorithm state, inline (no allocation per connection).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Algo {
    NewReno(newreno::NewReno),
    Cubic(Cubic),
}

impl Cc {
    /// RFC 5681 3.1 / RFC 6928 initial window: 10 segments... we use min(10*MSS, max(2*MSS, 14600)).
    pub fn new(kind: Congestion, mss: u32) -> Self {
        Cc {
            cwnd: (10 * mss).min((2 * mss).max(14_600)),
            ssthresh: u32::MAX,
            algo: match kind {
                Congestion::NewReno => Algo::NewReno(Default::default()),
                Congestion::Cubic => Algo::Cubic(Cubic::default()),
            },
        }
    }

    pub fn kind(&self) -> Congestion {
        match self.algo {
            Algo::NewReno(_) => Congestion::NewReno,
            Algo::Cubic(_) => Congestion::Cubic,
        }
    }

    pub fn set_kind(&mut self, kind: Congestion) {
        if kind != self.kind() {
            self.algo = match kind {
                Congestion::NewReno => Algo::NewReno(Default::default()),
                Congestion::Cubic => Algo::Cubic(Cubic::default()),
            };
        }
    }

    fn ctl(&mut self) -> &mut dyn Controller {
        match &mut self.algo {
            Algo::NewReno(n) => n,
            Algo::Cubic(c) => c,
        }
    }

    /// New data acknowledged outside recovery.
    pub fn on_ack(&mut self, acked: u32, mss: u32, now: Instant, srtt_us: u32) {
        if self.cwnd < self.ssthresh {
            // RFC 5681 3.1 slow start, byte counting without the L limit (stretch ACKs from
            // burst processing would otherwise slow it down).
            self.cwnd = self
                .cwnd
                .saturating_add(acked)
                .min(self.ssthresh.max(2 * mss));
            return;
        }
        let cwnd = self.cwnd;
        self.cwnd = self.ctl().on_ack_ca(cwnd, acked, mss, now, srtt_us);
    }

    /// A congestion event: sets ssthresh (RFC 5681 (4) for NewReno; beta = 0.7 for CUBIC).
    pub fn on_congestion(&mut self, flight: u32, mss: u32, now: Instant) {
        let cwnd = self.cwnd;
        self.ssthresh = self
            .ctl()
            .on_congestion(cwnd, flight, mss, now)
            .max(2 * mss);
    }

    /// RFC 5681 3.1 on RTO: ssthresh as for any congestion event, cwnd = 1 MSS (loss window).
    pub fn on_rto(&mut self, flight: u32, mss: u32, now: Instant) {
        self.on_congestion(flight, mss, now);
        self.cwnd = mss;
        self.ctl().reset();
    }
}
