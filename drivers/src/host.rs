//! `Host`: a stack bound to a port, and the one loop step every runner uses.
//!
//! `poll` = receive a burst → `Stack::process_rx` → `Stack::poll_tx` → transmit, repeated until the
//! port has nothing more to give or the budget is spent. Frames the port could not take stay in the
//! host's transmit batch, in order, and go first next time; the stack is not asked for more while
//! they wait, so back-pressure reaches the stack's own bounded queue instead of dropping here.

use crate::port::{Port, PortError};
use cnet_stack::{Batch, IfAddr, Instant, Stack};

/// What one `poll` moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    /// Frames received.
    pub rx: usize,
    /// Frames handed to the port.
    pub tx: usize,
}

impl PollStats {
    /// True if nothing moved.
    pub fn is_idle(&self) -> bool {
        self.rx == 0 && self.tx == 0
    }
}

/// A stack and its port.
#[derive(Debug)]
pub struct Host<P> {
    /// The stack.
    pub stack: Stack,
    /// The port.
    pub port: P,
    rx: Batch,
    tx: Batch,
    /// The stack's addresses as last told to the port ([`Port::local_addrs_changed`]).
    told_addrs: Vec<IfAddr>,
    /// The stack's configuration generation when `told_addrs` was last compared.
    told_gen: u64,
}

/// Bursts taken per `poll` at most, so application work is not starved under load.
pub const POLL_BUDGET: usize = 16;

impl<P: Port> Host<P> {
    /// Joins a stack and a port (the stack's pool must be the one the port fills).
    /// The port is told the stack's addresses now ([`Port::local_addrs_changed`]).
    pub fn new(stack: Stack, port: P) -> Self {
        let mut h = Host {
            stack,
            port,
            rx: Batch::new(),
            tx: Batch::new(),
            told_addrs: Vec::new(),
            told_gen: 0,
        };
        h.tell_addrs_now();
        h
    }

    /// Tells the port the stack's addresses if they may have changed since last told: one word
    /// compared per poll (addresses change only with a configuration event, which moves
    /// [`Stack::config_generation`]).
    #[inline]
    fn tell_addrs(&mut self) {
        if self.stack.config_generation() != self.told_gen {
            self.tell_addrs_now();
        }
    }

    /// Tells the port the stack's addresses if they differ from those last told (an allocation
    /// only on change).
    fn tell_addrs_now(&mut self) {
        self.told_gen = self.stack.config_generation();
        if self.told_addrs.as_slice() != self.stack.addrs() {
            self.told_addrs = self.stack.addrs().to_vec();
            self.port.local_addrs_changed(&self.told_addrs);
        }
    }

    /// Receives and processes up to [`POLL_BUDGET`] bursts, then flushes output.
    /// A change of the stack's addresses (configuration applied since) is told to the port first.
    pub fn poll(&mut self, now: Instant) -> Result<PollStats, PortError> {
        self.tell_addrs();
        let mut stats = PollStats::default();
        for _ in 0..POLL_BUDGET {
            let n = self
                .port
                .rx_burst(self.stack.pool_mut(), &mut self.rx, now)?;
            if n == 0 {
                break;
            }
            stats.rx += n;
            self.stack.process_rx(&mut self.rx, now);
            // Output of this burst (answers, ACKs) before the next one; a burst that produced
            // nothing (a reply the application has yet to read) costs no `poll_tx`.
            if self.work_pending() {
                stats.tx += self.flush(now)?;
            }
        }
        // End of the receive pass: ACKs the stack held back for full bursts go out now.
        self.stack.tcp_rx_done();
        // What is left, and the timers: `poll_tx` only if it has something to do (the same test
        // it makes itself: frames or touched connections, or a deadline at or before `now`).
        if self.work_pending() || self.stack.timers_due(now) {
            stats.tx += self.flush(now)?;
        }
        Ok(stats)
    }

    /// Frames wait in the host's batch, or the stack has output to produce now.
    #[inline]
    fn work_pending(&self) -> bool {
        !self.tx.is_empty() || self.stack.tx_work_pending()
    }

    /// Hands everything the stack has to send to the port, as far as the port takes it.
    ///
    /// `Stack::poll_tx` runs once, and again only while the stack still has work
    /// (`Stack::tx_work_pending`): the transmit path does not change the stack, so asking again
    /// when its queue is empty would only repeat the timer check.
    pub fn flush(&mut self, now: Instant) -> Result<usize, PortError> {
        let mut sent = 0;
        let mut polled = false;
        loop {
            if self.tx.is_empty() {
                if polled && !self.stack.tx_work_pending() {
                    return Ok(sent);
                }
                polled = true;
                if self.stack.poll_tx(&mut self.tx, now) == 0 {
                    return Ok(sent);
                }
            }
            let before = self.tx.len();
            let n = self
                .port
                .tx_burst(self.stack.pool_mut(), &mut self.tx, now)?;
            sent += n;
            if n < before {
                return Ok(sent);
            }
        }
    }

    /// The earliest of the stack's and the port's next deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.stack.poll_timeout(), self.port.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Frames waiting in the host's transmit batch.
    pub fn tx_waiting(&self) -> usize {
        self.tx.len()
    }

    /// Frames of the pool held by the stack, the port and this host together.
    pub fn frames_held(&self) -> usize {
        self.stack.frames_held() + self.port.frames_held() + self.tx.len() + self.rx.len()
    }

    /// Replaces the port by `f(port)` (e.g. wraps it in a [`crate::pcap::PcapPort`]), keeping the
    /// stack and any frames waiting to be sent.
    pub fn map_port<Q: Port>(self, f: impl FnOnce(P) -> Q) -> Host<Q> {
        Host {
            stack: self.stack,
            port: f(self.port),
            rx: self.rx,
            tx: self.tx,
            told_addrs: self.told_addrs,
            told_gen: self.told_gen,
        }
    }

    /// Frees everything the stack and the host hold (the port keeps its own).
    pub fn release_all(&mut self) {
        self.stack.release_all();
        self.tx.free_all(self.stack.pool_mut());
        self.rx.free_all(self.stack.pool_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortInfo;
    use cnet_stack::{ConfigEvent, MacAddr, Pool, Route, StackConfig};
    use core::net::Ipv4Addr;

    /// A port with no traffic that records what it is told of the stack's addresses.
    #[derive(Default)]
    struct Recorder {
        told: Vec<Vec<IfAddr>>,
    }

    impl Port for Recorder {
        fn rx_burst(
            &mut self,
            _: &mut Pool,
            _: &mut Batch,
            _: Instant,
        ) -> Result<usize, PortError> {
            Ok(0)
        }
        /// Takes everything (the gratuitous ARP of an added address) and frees it.
        fn tx_burst(
            &mut self,
            p: &mut Pool,
            b: &mut Batch,
            _: Instant,
        ) -> Result<usize, PortError> {
            let n = b.len();
            b.free_all(p);
            Ok(n)
        }
        fn info(&self) -> PortInfo {
            PortInfo {
                name: "rec".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                mtu: 1500,
            }
        }
        fn local_addrs_changed(&mut self, addrs: &[IfAddr]) {
            self.told.push(addrs.to_vec());
        }
    }

    fn addr(last: u8) -> IfAddr {
        IfAddr {
            addr: Ipv4Addr::new(198, 18, 0, last),
            prefix_len: 24,
        }
    }

    #[test]
    fn the_port_is_told_the_addresses_once_per_change() {
        let pool = Pool::new(64, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
        let mut h = Host::new(
            Stack::new(StackConfig::new(MacAddr([2, 0, 0, 0, 0, 1])), pool),
            Recorder::default(),
        );
        let now = Instant::ZERO;
        // Told at start only if there is something to tell (none yet: the slices are equal).
        assert!(h.port.told.is_empty());
        h.stack.apply_config(ConfigEvent::AddrAdd(addr(1)), now);
        h.poll(now).unwrap();
        h.poll(now).unwrap();
        assert_eq!(h.port.told, vec![vec![addr(1)]]);
        // A configuration event that leaves the addresses alone tells nothing.
        h.stack.apply_config(
            ConfigEvent::RouteAdd(Route {
                dst: Ipv4Addr::new(198, 19, 0, 0),
                prefix_len: 16,
                gateway: Some(Ipv4Addr::new(198, 18, 0, 254)),
                metric: 0,
            }),
            now,
        );
        h.poll(now).unwrap();
        assert_eq!(h.port.told.len(), 1);
        // Two changes between polls: told once, the final set.
        h.stack.apply_config(ConfigEvent::AddrAdd(addr(2)), now);
        h.stack.apply_config(ConfigEvent::AddrDel(addr(1)), now);
        h.poll(now).unwrap();
        h.poll(now).unwrap();
        assert_eq!(h.port.told, vec![vec![addr(1)], vec![addr(2)]]);
    }
}
