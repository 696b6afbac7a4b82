//! The cnet side: two [`Stack`]s, each in a [`Host`] over one end of an in-memory link, either
//!
//! - a perfect [`MemLink`] (`cnet`): the workspace's simulated wire, as the issue asks; or
//! - a [`CopyPort`] pair (`cnet-copy`): the same [`Wire`] as the smoltcp side's `CopyDevice`, so
//!   both stacks pay exactly the same link cost.
//!
//! Link cost per frame on both: the sender's frame is copied into a slot of the wire's ring (cnet:
//! and its pool frame freed); the receiver copies the slot into its buffer (cnet: a freshly
//! allocated pool frame). `MemLink` also rolls its impairment dice and keeps in-flight frames in a
//! binary heap even with no impairment set, which `CopyPort` and smoltcp's `CopyDevice` do not
//! (see `docs/PERFORMANCE.md` for its share of the profile).
//!
//! Neighbours are static (`NeighborSet`, permanent) on both stacks; checksums are computed on
//! transmit and verified on receive in software (`StackConfig::rx_checksum` is on by default).

use crate::link::Wire;
use crate::{
    EchoPair, Workload, CLIENT_IP, CLIENT_MAC, CLIENT_PORT, ECHO_PORT, FRAMES, MAX_IDLE_STEPS, MTU,
    PREFIX_LEN, SERVER_IP, SERVER_MAC,
};
use anyhow::Context as _;
use cnet_drivers::host::Host;
use cnet_drivers::mem::{LinkConfig, MemLink, MemPort};
use cnet_drivers::{Port, PortError, PortInfo};
use cnet_stack::{
    Batch, ConfigEvent, Duration, IfAddr, Instant, MacAddr, Neighbor, Pool, Stack, StackConfig,
    UdpDatagram, UdpHandle,
};
use core::net::{Ipv4Addr, SocketAddrV4};
use std::cell::RefCell;
use std::rc::Rc;

/// Longest Ethernet frame on the link.
const MAX_FRAME: usize = MTU + 14;

/// One end of the plain in-memory link ([`crate::link::Wire`]): copy out on transmit, copy in on
/// receive, nothing else. The smoltcp side's `CopyDevice` uses the same wire.
#[derive(Debug)]
pub struct CopyPort {
    wire: Rc<RefCell<Wire>>,
    side: usize,
    info: PortInfo,
    /// Gathers a frame chain (never used by single frames).
    scratch: Vec<u8>,
    /// Frames that arrived when the pool was empty.
    pub rx_dropped: u64,
}

impl CopyPort {
    /// The wire this end is on (its counters).
    pub fn wire(&self) -> std::cell::Ref<'_, Wire> {
        self.wire.borrow()
    }

    /// A connected pair, `a` (client side) first.
    pub fn pair(mac_a: MacAddr, mac_b: MacAddr) -> (CopyPort, CopyPort) {
        let wire = Wire::shared();
        let end = |side, mac, name: &str| CopyPort {
            wire: Rc::clone(&wire),
            side,
            info: PortInfo {
                name: name.into(),
                mac,
                mtu: MTU,
            },
            scratch: Vec::with_capacity(MAX_FRAME),
            rx_dropped: 0,
        };
        (end(0, mac_a, "copy0"), end(1, mac_b, "copy1"))
    }
}

impl Port for CopyPort {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        let mut wire = self.wire.borrow_mut();
        let mut n = 0;
        while !batch.is_full() {
            let Some(len) = wire.peek_len(self.side) else {
                break;
            };
            let Some(f) = pool.alloc() else {
                wire.discard(self.side);
                self.rx_dropped += 1;
                continue;
            };
            match pool.push_back(&f, len) {
                Some(dst) => {
                    wire.pop_into(self.side, dst);
                }
                None => {
                    pool.free(f);
                    wire.discard(self.side);
                    self.rx_dropped += 1;
                    continue;
                }
            }
            // Cannot fail: the batch had room.
            if let Err(f) = batch.push(f) {
                pool.free(f);
            }
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        let mut wire = self.wire.borrow_mut();
        let n = batch.len();
        for f in batch.drain() {
            if pool.is_single(&f) {
                wire.push(self.side, pool.data(&f));
            } else {
                self.scratch.clear();
                for seg in pool.chain_iter(&f) {
                    self.scratch.extend_from_slice(seg);
                }
                wire.push(self.side, &self.scratch);
            }
            pool.free(f);
        }
        Ok(n)
    }

    fn info(&self) -> PortInfo {
        self.info.clone()
    }
}

/// A cnet client and echo server over an in-memory link of type `P`.
pub struct CnetEcho<P> {
    name: &'static str,
    client: Host<P>,
    server: Host<P>,
    client_sock: UdpHandle,
    server_sock: UdpHandle,
    server_addr: SocketAddrV4,
    payload: Vec<u8>,
    window: u64,
    step: Duration,
    now: Instant,
    /// Received datagrams, reused across steps.
    scratch: Vec<UdpDatagram>,
}

/// A configured stack: one address, a permanent neighbour entry for the peer.
fn stack(
    mac: [u8; 6],
    ip: Ipv4Addr,
    peer_mac: [u8; 6],
    peer_ip: Ipv4Addr,
) -> anyhow::Result<Stack> {
    let mut cfg = StackConfig::new(MacAddr(mac));
    cfg.mtu = MTU;
    cfg.seed = u64::from(mac[5]);
    let pool = Pool::new(FRAMES, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM)
        .context("frame pool geometry")?;
    let mut s = Stack::new(cfg, pool);
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: PREFIX_LEN,
        }),
        Instant::ZERO,
    );
    s.apply_config(
        ConfigEvent::NeighborSet(Neighbor {
            ip: peer_ip,
            mac: MacAddr(peer_mac),
            permanent: true,
        }),
        Instant::ZERO,
    );
    Ok(s)
}

impl CnetEcho<MemPort> {
    /// Both stacks over a perfect [`MemLink`].
    pub fn over_memlink(w: Workload) -> anyhow::Result<Self> {
        let (client_port, server_port) =
            MemLink::pair(LinkConfig::new(1, MacAddr(CLIENT_MAC), MacAddr(SERVER_MAC)))
                .context("in-memory link config")?;
        Self::new("cnet", w, client_port, server_port)
    }
}

impl CnetEcho<CopyPort> {
    /// Both stacks over a [`CopyPort`] pair.
    pub fn over_copy_link(w: Workload) -> anyhow::Result<Self> {
        let (client_port, server_port) = CopyPort::pair(MacAddr(CLIENT_MAC), MacAddr(SERVER_MAC));
        Self::new("cnet-copy", w, client_port, server_port)
    }
}

impl<P: Port> CnetEcho<P> {
    /// Builds both stacks and the two sockets over the given ports.
    pub fn new(
        name: &'static str,
        w: Workload,
        client_port: P,
        server_port: P,
    ) -> anyhow::Result<Self> {
        let mut client = Host::new(
            stack(CLIENT_MAC, CLIENT_IP, SERVER_MAC, SERVER_IP)?,
            client_port,
        );
        let mut server = Host::new(
            stack(SERVER_MAC, SERVER_IP, CLIENT_MAC, CLIENT_IP)?,
            server_port,
        );
        let client_sock = client
            .stack
            .udp_bind(SocketAddrV4::new(CLIENT_IP, CLIENT_PORT))
            .context("client bind")?;
        let server_sock = server
            .stack
            .udp_bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT))
            .context("server bind")?;
        Ok(CnetEcho {
            name,
            client,
            server,
            client_sock,
            server_sock,
            server_addr: SocketAddrV4::new(SERVER_IP, ECHO_PORT),
            payload: w.payload_bytes(),
            window: w.window as u64,
            step: Duration::from_micros(w.step_us),
            now: Instant::ZERO,
            scratch: Vec::with_capacity(FRAMES),
        })
    }

    /// Sends one request from the client: a fresh frame, payload copied in, headers in place.
    fn send_request(&mut self) -> anyhow::Result<()> {
        let stack = &mut self.client.stack;
        let frame = stack.udp_alloc().context("client pool exhausted")?;
        match stack.pool_mut().push_back(&frame, self.payload.len()) {
            Some(buf) => buf.copy_from_slice(&self.payload),
            None => {
                stack.pool_mut().free(frame);
                anyhow::bail!("payload does not fit a frame");
            }
        }
        stack
            .udp_send(self.client_sock, frame, self.server_addr, self.now)
            .context("client udp_send")
    }
}

impl<P: Port> EchoPair for CnetEcho<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn add_idle_sockets(&mut self, n: usize, _before: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            n <= crate::MAX_IDLE_SOCKETS,
            "at most {} idle sockets",
            crate::MAX_IDLE_SOCKETS
        );
        for i in 0..n {
            let port = crate::IDLE_PORT_BASE + i as u16;
            for (host, ip) in [(&mut self.client, CLIENT_IP), (&mut self.server, SERVER_IP)] {
                host.stack
                    .udp_bind(SocketAddrV4::new(ip, port))
                    .with_context(|| format!("idle socket on port {port}"))?;
            }
        }
        Ok(())
    }

    fn run(&mut self, n: u64) -> anyhow::Result<u64> {
        let (mut sent, mut received, mut steps, mut idle) = (0u64, 0u64, 0u64, 0u64);
        while received < n {
            // Client: replies in, queued requests out.
            self.client.poll(self.now).context("client poll")?;
            let got =
                self.client
                    .stack
                    .udp_recv_batch(self.client_sock, &mut self.scratch, usize::MAX);
            for d in self.scratch.drain(..) {
                let len = d.len;
                self.client.stack.pool_mut().free(d.frame);
                anyhow::ensure!(len == self.payload.len(), "reply of {len} bytes");
            }
            received += got as u64;
            while sent - received < self.window && sent < n {
                self.send_request()?;
                sent += 1;
            }
            self.client.flush(self.now).context("client flush")?;

            // Server: requests in, each sent back in its own frame.
            self.server.poll(self.now).context("server poll")?;
            self.server
                .stack
                .udp_recv_batch(self.server_sock, &mut self.scratch, usize::MAX);
            for d in self.scratch.drain(..) {
                self.server
                    .stack
                    .udp_send(self.server_sock, d.frame, d.src, self.now)
                    .context("server udp_send")?;
            }
            self.server.flush(self.now).context("server flush")?;

            self.now = self.now + self.step;
            steps += 1;
            idle = if got == 0 { idle + 1 } else { 0 };
            anyhow::ensure!(
                idle < MAX_IDLE_STEPS,
                "cnet echo stuck: {sent} sent, {received} echoed, counters {:?}",
                self.client.stack.counters()
            );
        }
        Ok(steps)
    }
}
