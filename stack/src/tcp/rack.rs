//! RACK (RFC 8985): time-based loss detection, and D-SACK based undo of spurious recoveries
//! (RFC 2883, RFC 3708; Linux `tcp_try_undo_dsack`).
//!
//! RACK deems a segment lost when a segment sent after it has been delivered (cumulatively or
//! selectively acknowledged) and more than `RACK.rtt + RACK.reo_wnd` has passed since it was
//! sent, instead of counting three duplicate ACKs or SACKed segments (RFC 6675 DupThresh), which
//! mistakes any reordering of three segments for a loss. The reordering window starts at
//! `min_RTT / 4`, is zero until reordering has been seen (so a connection without reordering
//! reacts as fast as DupThresh), and grows by `min_RTT / 4` for every round trip in which the
//! peer reports a D-SACK (a duplicate: a retransmission that was not needed), up to SRTT; it
//! shrinks back after 16 recoveries without D-SACK (RFC 8985 6.2 step 4).
//!
//! Undo: a recovery remembers the congestion state before its reduction and the segments it
//! retransmitted. If the peer then reports every one of those retransmissions as a duplicate
//! (D-SACK), the original transmissions had arrived and the reduction was needless: the old
//! window comes back (RFC 3708 2 / RFC 4015-style response, as Linux's undo of cwnd reduction).
//!
//! Send times are the low 32 bits of a µs clock (wrap-around safe within 35 minutes).

use super::congestion::Cc;
use super::seq_gt;
use arrayvec::ArrayVec;

/// Most retransmissions one undoable recovery may hold; beyond that, it is not undone.
const UNDO_MAX: usize = 16;
/// Recoveries without D-SACK after which the reordering window goes back to its base.
const REO_WND_PERSIST: u8 = 16;

/// Per-connection RACK and undo state (boxed in the connection).
#[derive(Debug, Clone)]
pub(crate) struct Rack {
    /// Send time and end of the most recently sent segment known to be delivered.
    pub xmit_ts: u32,
    pub end_seq: u32,
    /// RTT of that segment (µs).
    pub rtt: u32,
    /// A segment was delivered: the fields above are valid.
    pub valid: bool,
    /// Minimum RTT seen (µs).
    pub min_rtt: u32,
    /// Highest sequence number delivered (RACK.fack).
    pub fack: u32,
    pub reordering_seen: bool,
    pub reo_wnd_mult: u32,
    pub reo_wnd_persist: u8,
    /// SND.NXT when the last D-SACK that grew the window arrived (one step per round trip).
    pub dsack_round: Option<u32>,
    /// The recovery that may still be undone (boxed: most connections never recover).
    pub undo: Option<Box<Undo>>,
    /// Recoveries undone.
    pub undos: u32,
    /// The current recovery was undone (its end must not pull cwnd down).
    pub undone: bool,
    /// Tail loss probe episode (RFC 8985 7.4): SND.NXT after the last probe, while the probe's
    /// outcome is unknown (Linux `tlp_high_seq`). At most one probe is outstanding.
    pub tlp_end_seq: Option<u32>,
    /// The outstanding probe retransmitted `[tlp_seq, tlp_end_seq)` (not new data).
    pub tlp_is_retrans: bool,
    pub tlp_seq: u32,
}

/// What an undo needs: the congestion state before the reduction, and the retransmissions not
/// yet reported as duplicates.
#[derive(Debug, Clone)]
pub(crate) struct Undo {
    pub prior: Cc,
    pub retrans: ArrayVec<u32, UNDO_MAX>,
    pub any: bool,
}

impl Default for Rack {
    fn default() -> Self {
        Rack {
            xmit_ts: 0,
            end_seq: 0,
            rtt: 0,
            valid: false,
            min_rtt: u32::MAX,
            fack: 0,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
            undo: None,
            undos: 0,
            undone: false,
            tlp_end_seq: None,
            tlp_is_retrans: false,
            tlp_seq: 0,
        }
    }
}

/// RFC 8985 RACK_sent_after: `t1` (ending at `e1`) was sent after `t2` (ending at `e2`).
#[inline]
pub(crate) fn sent_after(t1: u32, e1: u32, t2: u32, e2: u32) -> bool {
    let d = t1.wrapping_sub(t2) as i32;
    d > 0 || (d == 0 && seq_gt(e1, e2))
}

impl Rack {
    /// RFC 8985 6.2 steps 2 and 3 for one newly delivered segment (ascending sequence order).
    pub fn on_delivered(&mut self, sent: u32, end: u32, retrans: bool, now_us: u32) {
        let first = !self.valid;
        let rtt = now_us.wrapping_sub(sent);
        if retrans && (self.min_rtt == u32::MAX || rtt < self.min_rtt) {
            // Step 2: an ACK of the original transmission, not of this retransmission.
            return;
        }
        if !retrans {
            self.min_rtt = self.min_rtt.min(rtt);
        }
        if first || sent_after(sent, end, self.xmit_ts, self.end_seq) {
            self.rtt = rtt;
            self.valid = true;
            self.xmit_ts = sent;
            self.end_seq = end;
        }
        // Step 3: a segment delivered below one delivered before, not a retransmission,
        // was reordered.
        if first || seq_gt(end, self.fack) {
            self.fack = end;
        } else if seq_gt(self.fack, end) && !retrans {
            self.reordering_seen = true;
        }
    }

    /// RFC 8985 6.2 step 4, D-SACK part: a D-SACK arrived with the ACK.
    pub fn on_dsack(&mut self, snd_una: u32, snd_nxt: u32) {
        if self.dsack_round.is_some_and(|r| !seq_gt(r, snd_una)) {
            self.dsack_round = None;
        }
        if self.dsack_round.is_none() {
            self.dsack_round = Some(snd_nxt);
            self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
            self.reo_wnd_persist = REO_WND_PERSIST;
        }
    }

    /// RFC 8985 6.2 step 4: a recovery ended.
    pub fn on_recovery_end(&mut self) {
        if self.reo_wnd_persist > 0 {
            self.reo_wnd_persist -= 1;
            if self.reo_wnd_persist == 0 {
                self.reo_wnd_mult = 1;
            }
        }
    }

    /// RFC 8985 6.2 step 4: the reordering window (µs).
    pub fn reo_wnd(&self, in_recovery: bool, segs_sacked: u32, srtt: u32) -> u32 {
        if !self.reordering_seen && (in_recovery || segs_sacked >= super::input::DUPTHRESH) {
            return 0;
        }
        if self.min_rtt == u32::MAX {
            return 0;
        }
        (self.reo_wnd_mult.saturating_mul(self.min_rtt / 4)).min(srtt)
    }

    /// RFC 8985 7.4.3 (as Linux `tcp_process_tlp_ack`): what an ACK of `ack` says about the
    /// outstanding probe. `pure_dupack`: no data, no window update, SND.UNA not advanced,
    /// nothing newly SACKed; `dsack`: a D-SACK block arrived with it. Returns true when the
    /// probe repaired a loss (the ACK went past the probe without the peer reporting the
    /// probe as a duplicate): the caller reduces the window as a fast recovery would.
    pub fn tlp_on_ack(&mut self, ack: u32, pure_dupack: bool, dsack: Option<(u32, u32)>) -> bool {
        let Some(end) = self.tlp_end_seq else {
            return false;
        };
        if super::seq_lt(ack, end) {
            return false;
        }
        let probe_dup = dsack.is_some_and(|(l, r)| {
            self.tlp_is_retrans && super::seq_lt(l, end) && seq_gt(r, self.tlp_seq)
        });
        if !self.tlp_is_retrans || probe_dup {
            // New data delivered, or both the original and the probe arrived: no loss.
            self.tlp_end_seq = None;
            false
        } else if seq_gt(ack, end) {
            // The ACK passed the probe and no duplicate was reported: the probe repaired a loss.
            self.tlp_end_seq = None;
            true
        } else {
            if pure_dupack {
                // The ACK of the probe's sequence came before; this one is the second copy.
                self.tlp_end_seq = None;
            }
            false
        }
    }

    /// A recovery (fast or RTO) starts reducing the window from `prior`.
    pub fn start_undo(&mut self, prior: Cc) {
        self.undone = false;
        let u = Undo {
            prior,
            retrans: ArrayVec::new(),
            any: false,
        };
        match &mut self.undo {
            Some(b) => **b = u,
            None => self.undo = Some(Box::new(u)),
        }
    }

    /// The segment at `seq` was retransmitted.
    pub fn on_retransmit(&mut self, seq: u32) {
        if let Some(u) = &mut self.undo {
            u.any = true;
            if u.retrans.try_push(seq).is_err() {
                self.undo = None;
            }
        }
    }

    /// A D-SACK reported `[l, r)` twice; returns the state to restore when that was the last
    /// retransmission of the recovery not yet reported (RFC 3708 2).
    pub fn dsack_undo(&mut self, l: u32, r: u32) -> Option<Cc> {
        let u = self.undo.as_mut()?;
        let before = u.retrans.len();
        u.retrans
            .retain(|s| !(super::seq_ge(*s, l) && super::seq_lt(*s, r)));
        if u.any && u.retrans.is_empty() && before > 0 {
            let prior = u.prior;
            self.undo = None;
            self.undos += 1;
            self.undone = true;
            return Some(prior);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordering_window_starts_closed_then_grows_with_dsack_rounds_up_to_srtt() {
        let mut r = Rack::default();
        r.on_delivered(0, 1000, false, 2000);
        assert_eq!((r.rtt, r.min_rtt), (2000, 2000));
        assert_eq!(
            r.reo_wnd(false, 0, 2500),
            500,
            "min_RTT / 4 before DupThresh"
        );
        assert_eq!(
            r.reo_wnd(false, 3, 2500),
            0,
            "no reordering seen: DupThresh"
        );
        assert_eq!(r.reo_wnd(true, 0, 2500), 0);
        // Segment 3000 delivered, then 2000 (sent before it): reordering.
        r.on_delivered(200, 3000, false, 2300);
        r.on_delivered(100, 2000, false, 2400);
        assert!(r.reordering_seen);
        assert_eq!(
            (r.xmit_ts, r.end_seq),
            (200, 3000),
            "the most recently sent"
        );
        assert_eq!(r.reo_wnd(true, 5, 2500), 500);
        r.on_dsack(3000, 9000);
        r.on_dsack(4000, 10_000);
        assert_eq!(r.reo_wnd_mult, 2, "one step per round trip");
        r.on_dsack(9000, 11_000);
        assert_eq!(r.reo_wnd_mult, 3);
        assert_eq!(r.reo_wnd(true, 5, 2500), 1500);
        r.on_dsack(11_000, 12_000);
        r.on_dsack(12_000, 13_000);
        assert_eq!(r.reo_wnd(true, 5, 2500), 2500, "at most SRTT");
        for _ in 0..16 {
            r.on_recovery_end();
        }
        assert_eq!(r.reo_wnd(true, 5, 2500), 500, "back to the base");
    }

    #[test]
    fn a_retransmission_acked_faster_than_min_rtt_acknowledges_the_original() {
        let mut r = Rack::default();
        r.on_delivered(0, 1000, false, 2000);
        r.on_delivered(5000, 2000, true, 5500);
        assert_eq!(r.end_seq, 1000, "ambiguous: ignored");
        r.on_delivered(5000, 2000, true, 7500);
        assert_eq!(r.end_seq, 2000);
    }
}
