//! `ImpairPort`: seeded, reproducible impairments (loss, duplication, corruption, reordering,
//! delay, jitter, rate) wrapped around any port, in both directions — the in-memory link's engine
//! applied to a real device, so that a stack on AF_XDP can be tested against the Linux kernel over
//! a bad path on a machine without netem.
//!
//! Frames are copied into the impairment queue (and out again into fresh pool frames when due):
//! this is a test tool, not a data path. Frames it holds are counted by `frames_held` only while
//! they are in pool frames (the queue itself holds plain buffers).

use crate::mem::{Direction, Impairments, LinkConfigError, LinkStats};
use crate::port::{Port, PortError, PortInfo};
use cnet_stack::{Batch, Instant, Pool};

/// Impairments for each direction of an [`ImpairPort`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImpairConfig {
    /// Seed of both directions' generators.
    pub seed: u64,
    /// Applied to frames the stack transmits.
    pub tx: Impairments,
    /// Applied to frames the device receives, before the stack sees them.
    pub rx: Impairments,
}

impl ImpairConfig {
    /// Checks both directions' knobs.
    pub fn validate(&self) -> Result<(), LinkConfigError> {
        self.tx.validate("tx")?;
        self.rx.validate("rx")
    }
}

/// A port whose traffic passes through seeded impairments. See the module docs.
pub struct ImpairPort<P> {
    inner: P,
    tx: Direction,
    rx: Direction,
    /// Frames due for the device that it has not taken yet (kept in order).
    tx_due: Batch,
    /// Scratch for frames received from the device.
    rx_raw: Batch,
}

impl<P: core::fmt::Debug> core::fmt::Debug for ImpairPort<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ImpairPort")
            .field("inner", &self.inner)
            .field("tx", &self.tx.stats)
            .field("rx", &self.rx.stats)
            .finish()
    }
}

impl<P: Port> ImpairPort<P> {
    /// Wraps `inner`. Frames longer than the inner port's MTU + 14 are dropped and counted.
    pub fn new(inner: P, cfg: ImpairConfig) -> Result<Self, LinkConfigError> {
        cfg.validate()?;
        let mtu = inner.info().mtu;
        let mut seeder = cfg.seed;
        let mut next = || {
            seeder = seeder.wrapping_add(0x9e37_79b9_7f4a_7c15);
            seeder
        };
        let (tx_seed, rx_seed) = (next(), next());
        Ok(ImpairPort {
            inner,
            tx: Direction::new(cfg.tx, mtu, tx_seed),
            rx: Direction::new(cfg.rx, mtu, rx_seed),
            tx_due: Batch::new(),
            rx_raw: Batch::new(),
        })
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, writable.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// What happened to transmitted frames.
    pub fn tx_stats(&self) -> LinkStats {
        self.tx.stats
    }

    /// What happened to received frames.
    pub fn rx_stats(&self) -> LinkStats {
        self.rx.stats
    }

    /// Hands due transmit frames to the device, as far as it takes them.
    fn flush_tx(&mut self, pool: &mut Pool, now: Instant) -> Result<(), PortError> {
        loop {
            if self.tx_due.is_empty() && self.tx.receive(pool, &mut self.tx_due, now) == 0 {
                return Ok(());
            }
            let before = self.tx_due.len();
            let took = self.inner.tx_burst(pool, &mut self.tx_due, now)?;
            if took < before {
                return Ok(());
            }
        }
    }
}

impl<P: Port> Port for ImpairPort<P> {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        // Frames due for the device leave on every call, not only when the stack sends.
        self.flush_tx(pool, now)?;
        self.inner.rx_burst(pool, &mut self.rx_raw, now)?;
        self.rx.transmit(pool, &mut self.rx_raw, now);
        Ok(self.rx.receive(pool, batch, now))
    }

    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        let n = self.tx.transmit(pool, batch, now);
        self.flush_tx(pool, now)?;
        Ok(n)
    }

    fn info(&self) -> PortInfo {
        self.inner.info()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.inner.poll_timeout(),
            self.tx.next_delivery(),
            self.rx.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner().wait_fd()
    }

    fn frames_held(&self) -> usize {
        self.inner.frames_held() + self.tx_due.len() + self.rx_raw.len()
    }
    fn local_addrs_changed(&mut self, addrs: &[cnet_stack::IfAddr]) {
        self.inner.local_addrs_changed(addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{LinkConfig, MemLink};
    use cnet_stack::{Duration, MacAddr};

    fn pool() -> Pool {
        Pool::new(256, 2048, 192).unwrap()
    }

    #[test]
    fn impairments_apply_both_ways_and_frames_are_accounted_for() {
        let (a, mut b) = MemLink::pair(LinkConfig::new(
            1,
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        ))
        .unwrap();
        let lossy = Impairments {
            loss: 0.5,
            delay: Duration::from_millis(2),
            ..Impairments::default()
        };
        let mut a = ImpairPort::new(
            a,
            ImpairConfig {
                seed: 9,
                tx: lossy.clone(),
                rx: lossy,
            },
        )
        .unwrap();
        let (mut pa, mut pb) = (pool(), pool());
        let mut batch = Batch::new();
        for i in 0..40u8 {
            batch.push(pa.alloc_from(&[i; 60]).unwrap()).unwrap();
        }
        assert_eq!(a.tx_burst(&mut pa, &mut batch, Instant::ZERO).unwrap(), 40);
        let mut got = Batch::new();
        b.rx_burst(&mut pb, &mut got, Instant::ZERO).unwrap();
        assert!(got.is_empty(), "delayed by 2 ms");
        let t = a.poll_timeout().expect("frames in flight");
        assert_eq!(t, Instant::from_millis(2));
        // Delivered to the device when due, on the next call of either direction.
        a.rx_burst(&mut pa, &mut Batch::new(), t).unwrap();
        b.rx_burst(&mut pb, &mut got, t).unwrap();
        let delivered = got.len();
        assert!(
            (8..=32).contains(&delivered),
            "about half lost: {delivered}"
        );
        got.free_all(&mut pb);
        assert_eq!(a.tx_stats().lost as usize + delivered, 40);
        // The other way: b sends, a's receive side loses about half and delays.
        for i in 0..40u8 {
            batch.push(pb.alloc_from(&[i; 60]).unwrap()).unwrap();
        }
        b.tx_burst(&mut pb, &mut batch, t).unwrap();
        let mut seen = Batch::new();
        a.rx_burst(&mut pa, &mut seen, t).unwrap();
        assert!(seen.is_empty());
        let t2 = t + Duration::from_millis(2);
        a.rx_burst(&mut pa, &mut seen, t2).unwrap();
        assert_eq!(seen.len() + a.rx_stats().lost as usize, 40);
        seen.free_all(&mut pa);
        assert_eq!(pa.available(), 256);
        assert_eq!(pb.available(), 256);
    }
}
