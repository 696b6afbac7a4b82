//! TCP over the in-memory link (issue #6): bulk throughput of cnet against smoltcp 0.14, and the
//! building blocks of the connection-scaling measurements (per-packet cost and memory with many
//! established connections).
//!
//! Both stacks run on one thread over the same link design as the UDP benchmark: cnet over a
//! [`CopyPort`] pair, smoltcp over a [`CopyDevice`] pair (the rings of `link::Wire`, one copy
//! out on transmit and one copy in on receive per frame, no impairment). Virtual time advances by a
//! fixed step per loop iteration; the loop step is the same for both stacks: client
//! receive+transmit, client application, client transmit, server receive+transmit, server
//! application, server transmit.
//!
//! Bulk: the client writes `bytes` from a fixed pattern with the copying send call
//! (`tcp_send_slice` / `send_slice`) as fast as the send buffer takes them; the server reads them
//! with the copying receive call (`tcp_recv_slice` / `recv_slice`) into a 64 KiB buffer and
//! discards them. So both stacks copy each byte once in and once out besides the link's copies.
//! The `-zc` variants read with each stack's zero-copy receive call instead (cnet's `tcp_recv`
//! lends the received frames; smoltcp's `recv` runs a closure over its receive ring): the
//! application sees the bytes in place, and the copy out is gone on both sides.

use crate::cnet_echo::CopyPort;
use crate::smoltcp_echo::CopyDevice;
use crate::SERVER_MAC;
use crate::{CLIENT_IP, CLIENT_MAC, CLIENT_PORT, MAX_IDLE_STEPS, MTU, PREFIX_LEN, SERVER_IP};
use anyhow::Context as _;
use cnet_drivers::host::Host;
use cnet_stack::tcp::{TcpHandle, TcpListener, TcpOpts, TcpState};
use cnet_stack::{
    ConfigEvent, Duration, IfAddr, Instant, MacAddr, Neighbor, Pool, Stack, StackConfig,
};
use core::net::{Ipv4Addr, SocketAddrV4};

/// The server's TCP port of the bulk transfer.
pub const SERVER_PORT_TCP: u16 = 5001;
/// Bytes the receiving application reads per call.
pub const READ_BUF: usize = 64 * 1024;
/// Bytes the sending application offers per call at most.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Parameters of a bulk transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkConfig {
    /// Bytes timed.
    pub bytes: u64,
    /// Bytes transferred before the timed part (same connection; lets the congestion window open).
    pub warmup: u64,
    /// Send and receive buffer of every socket, bytes.
    pub buf: u32,
    /// Virtual time per loop step, microseconds.
    pub step_us: u64,
    /// cnet only: TCP timestamps (RFC 7323) on. smoltcp sends none unless the application installs
    /// a generator, so they are off by default for equal segment sizes (1460 payload bytes).
    pub cnet_timestamps: bool,
    /// Check every received byte against the pattern (tests; off when timing).
    pub verify: bool,
    /// The receiving application reads in place instead of copying into its buffer: cnet's
    /// `tcp_recv` (frames lent to the application, freed after reading) and smoltcp's `recv`
    /// (a closure over its receive ring). Both stacks' zero-copy receive calls.
    pub zero_copy_rx: bool,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            bytes: 256 << 20,
            warmup: 16 << 20,
            buf: 4 << 20,
            step_us: 10,
            cnet_timestamps: false,
            verify: false,
            zero_copy_rx: false,
        }
    }
}

/// What a bulk transfer measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkResult {
    /// Bytes received in the timed part.
    pub bytes: u64,
    /// Wall-clock seconds of the timed part.
    pub secs: f64,
    /// CPU seconds of the calling thread in the timed part ([`crate::cpu`]): wall clock without
    /// the time other jobs had the core.
    pub cpu_secs: f64,
    /// Loop steps of the timed part.
    pub steps: u64,
    /// Frames the receiver sent in the timed part.
    pub server_frames: u64,
    /// Of those, pure ACKs (no payload).
    pub acks: u64,
}

impl BulkResult {
    /// Goodput in Gbit/s on one core (both stacks and the link share it).
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }

    /// Goodput in Gbit/s per CPU second of the benchmark's thread.
    pub fn cpu_gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.cpu_secs / 1e9
    }

    /// Pure ACKs the receiver sent per GiB received.
    pub fn acks_per_gib(&self) -> f64 {
        self.acks as f64 * (1u64 << 30) as f64 / self.bytes as f64
    }
}

/// The byte at stream offset `i`.
#[inline]
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

/// A source buffer: `pattern` for offsets `0..2 * WRITE_CHUNK`; a write at stream offset `off`
/// takes `src[off % WRITE_CHUNK..]`, which is the pattern only if the pattern repeats every
/// `WRITE_CHUNK` bytes, so verification uses [`expected`].
fn source() -> Vec<u8> {
    (0..2 * WRITE_CHUNK as u64)
        .map(|i| expected(i % WRITE_CHUNK as u64))
        .collect()
}

/// The byte the receiver expects at stream offset `i` (the pattern repeats every `WRITE_CHUNK`).
#[inline]
fn expected(i: u64) -> u8 {
    pattern(i % WRITE_CHUNK as u64)
}

fn check(data: &[u8], off: u64) -> anyhow::Result<()> {
    for (j, b) in data.iter().enumerate() {
        let want = expected(off + j as u64);
        anyhow::ensure!(
            *b == want,
            "byte {} is {b:#x}, want {want:#x}",
            off + j as u64
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cnet

/// A configured cnet stack: one address (more with [`add_addr`]), a permanent neighbour entry
/// for the peer.
pub fn cnet_stack(
    mac: [u8; 6],
    ip: Ipv4Addr,
    peer_mac: [u8; 6],
    peer_ip: Ipv4Addr,
    frames: usize,
    tune: impl FnOnce(&mut StackConfig),
) -> anyhow::Result<Stack> {
    let mut cfg = StackConfig::new(MacAddr(mac));
    cfg.mtu = MTU;
    cfg.seed = u64::from(mac[5]);
    tune(&mut cfg);
    let pool = Pool::new(frames, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM)
        .context("frame pool geometry")?;
    let mut s = Stack::new(cfg, pool);
    add_addr(&mut s, ip);
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

/// Adds `ip`/[`PREFIX_LEN`] to a stack.
pub fn add_addr(s: &mut Stack, ip: Ipv4Addr) {
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: PREFIX_LEN,
        }),
        Instant::ZERO,
    );
}

/// A cnet client and server over a [`CopyPort`] pair.
pub struct CnetTcpPair {
    /// The client host.
    pub client: Host<CopyPort>,
    /// The server host.
    pub server: Host<CopyPort>,
    /// Virtual now.
    pub now: Instant,
    /// Virtual time per step.
    pub step: Duration,
}

impl CnetTcpPair {
    /// Both stacks with `frames` frames each, tuned by `tune` (applied to both).
    pub fn new(
        frames: usize,
        step_us: u64,
        tune: impl Fn(&mut StackConfig),
    ) -> anyhow::Result<Self> {
        let (cp, sp) = CopyPort::pair(MacAddr(CLIENT_MAC), MacAddr(SERVER_MAC));
        let client = cnet_stack(CLIENT_MAC, CLIENT_IP, SERVER_MAC, SERVER_IP, frames, &tune)?;
        let server = cnet_stack(SERVER_MAC, SERVER_IP, CLIENT_MAC, CLIENT_IP, frames, &tune)?;
        Ok(CnetTcpPair {
            client: Host::new(client, cp),
            server: Host::new(server, sp),
            now: Instant::ZERO,
            step: Duration::from_micros(step_us),
        })
    }

    /// Client receive + transmit (`Host::poll`).
    pub fn client_poll(&mut self) -> anyhow::Result<()> {
        self.client.poll(self.now).context("client poll")?;
        Ok(())
    }

    /// Client transmit (`Host::flush`).
    pub fn client_flush(&mut self) -> anyhow::Result<()> {
        self.client.flush(self.now).context("client flush")?;
        Ok(())
    }

    /// Server receive + transmit.
    pub fn server_poll(&mut self) -> anyhow::Result<()> {
        self.server.poll(self.now).context("server poll")?;
        Ok(())
    }

    /// Server transmit.
    pub fn server_flush(&mut self) -> anyhow::Result<()> {
        self.server.flush(self.now).context("server flush")?;
        Ok(())
    }

    /// Advances virtual time by one step.
    pub fn tick(&mut self) {
        self.now = self.now + self.step;
    }
}

/// cnet's bulk transfer: one connection client → server, see the module docs.
pub struct CnetBulk {
    pair: CnetTcpPair,
    client: TcpHandle,
    server: TcpHandle,
    src: Vec<u8>,
    rbuf: Vec<u8>,
    sent: u64,
    received: u64,
    verify: bool,
    zero_copy_rx: bool,
}

impl CnetBulk {
    /// Builds the pair and opens the connection.
    pub fn new(cfg: &BulkConfig) -> anyhow::Result<CnetBulk> {
        // Room for a full send buffer, a full receive buffer and what is in flight, per side.
        let frames = (2 * cfg.buf as usize / 1024).max(4096);
        let ts = cfg.cnet_timestamps;
        let buf = cfg.buf;
        let mut pair = CnetTcpPair::new(frames, cfg.step_us, |c| {
            c.tcp_timestamps = ts;
            c.tcp_snd_buf = buf;
            c.tcp_rcv_buf = buf;
        })?;
        let l = pair
            .server
            .stack
            .tcp_listen(
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT_TCP),
                16,
                TcpOpts::default(),
            )
            .context("listen")?;
        let client = pair
            .client
            .stack
            .tcp_connect(
                SocketAddrV4::new(SERVER_IP, SERVER_PORT_TCP),
                Some(SocketAddrV4::new(CLIENT_IP, CLIENT_PORT)),
                TcpOpts::default(),
                pair.now,
            )
            .context("connect")?;
        let server = handshake(&mut pair, l, client)?;
        Ok(CnetBulk {
            pair,
            client,
            server,
            src: source(),
            rbuf: vec![0; READ_BUF],
            sent: 0,
            received: 0,
            verify: cfg.verify,
            zero_copy_rx: cfg.zero_copy_rx,
        })
    }

    /// Reads what the server has received: copied into the read buffer, or lent in place
    /// (`zero_copy_rx`). Returns the bytes read.
    fn server_read(&mut self) -> anyhow::Result<u64> {
        let stack = &mut self.pair.server.stack;
        let mut n = 0u64;
        if self.zero_copy_rx {
            while let Some(f) = stack.tcp_recv(self.server) {
                for part in stack.pool().chain_iter(&f) {
                    if self.verify {
                        check(part, self.received + n)?;
                    }
                    n += part.len() as u64;
                }
                stack.pool_mut().free(f);
            }
        } else {
            loop {
                let k = stack.tcp_recv_slice(self.server, &mut self.rbuf);
                if k == 0 {
                    break;
                }
                if self.verify {
                    check(&self.rbuf[..k], self.received + n)?;
                }
                n += k as u64;
            }
        }
        self.received += n;
        Ok(n)
    }

    /// Transfers `n` more bytes; returns loop steps. Ends with everything received.
    pub fn transfer(&mut self, n: u64) -> anyhow::Result<u64> {
        let target = self.received + n;
        let (mut steps, mut idle) = (0u64, 0u64);
        while self.received < target {
            let p = &mut self.pair;
            p.client_poll()?;
            while self.sent < target {
                let off = (self.sent % WRITE_CHUNK as u64) as usize;
                let k = ((target - self.sent) as usize).min(WRITE_CHUNK);
                let taken = p
                    .client
                    .stack
                    .tcp_send_slice(self.client, &self.src[off..off + k], p.now)
                    .map_err(|e| anyhow::anyhow!("cnet tcp_send_slice: {e}"))?;
                self.sent += taken as u64;
                if taken < k {
                    break;
                }
            }
            p.client_flush()?;
            p.server_poll()?;
            let before = self.received;
            self.server_read()?;
            let p = &mut self.pair;
            p.server_flush()?;
            p.tick();
            steps += 1;
            idle = if self.received == before { idle + 1 } else { 0 };
            anyhow::ensure!(
                idle < MAX_IDLE_STEPS,
                "cnet bulk stuck at {} of {target} bytes: client {:?} server {:?}",
                self.received,
                p.client.stack.tcp_info(self.client),
                p.server.stack.tcp_info(self.server)
            );
        }
        Ok(steps)
    }

    /// Frames the server (receiver) has sent so far, and of those the small ones (pure ACKs).
    pub fn server_frames(&self) -> (u64, u64) {
        let w = self.pair.server.port.wire();
        (w.pushed[1], w.small[1])
    }

    /// The connection's state on both ends, for the report.
    pub fn info(&self) -> String {
        let c = self.pair.client.stack.tcp_info(self.client);
        let s = self.pair.server.stack.tcp_info(self.server);
        match (c, s) {
            (Some(c), Some(s)) => format!(
                "cwnd={} mss={} snd_wnd={} srtt_us={} retransmits={} server_rcv_wnd={} ts={} sack={}",
                c.cwnd,
                c.mss,
                c.snd_wnd,
                c.srtt.as_micros(),
                c.retransmits,
                s.rcv_wnd,
                c.timestamps,
                c.sack
            ),
            _ => "closed".into(),
        }
    }
}

/// Steps the pair until the listener `l` yields the connection `client` opened; returns the
/// server's handle. Both ends are ESTABLISHED after it.
pub fn handshake(
    pair: &mut CnetTcpPair,
    l: TcpListener,
    client: TcpHandle,
) -> anyhow::Result<TcpHandle> {
    for _ in 0..1000 {
        pair.client_poll()?;
        pair.client_flush()?;
        pair.server_poll()?;
        let got = pair.server.stack.tcp_accept(l);
        pair.server_flush()?;
        pair.tick();
        if let Some(h) = got {
            pair.client_poll()?;
            anyhow::ensure!(
                pair.client.stack.tcp_state(client) == Some(TcpState::Established),
                "client not established: {:?}",
                pair.client.stack.tcp_state(client)
            );
            return Ok(h);
        }
    }
    anyhow::bail!(
        "no connection after 1000 steps: client {:?}",
        pair.client.stack.tcp_state(client)
    )
}

// ---------------------------------------------------------------------------------------------
// smoltcp

mod smol {
    use super::*;
    use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant as SInstant;

    /// One smoltcp endpoint with one TCP socket.
    pub(super) struct Endpoint {
        pub iface: Interface,
        pub dev: CopyDevice,
        pub sockets: SocketSet<'static>,
        pub sock: SocketHandle,
    }

    impl Endpoint {
        pub fn new(
            mut dev: CopyDevice,
            mac: [u8; 6],
            ip: Ipv4Addr,
            buf: usize,
            now: SInstant,
        ) -> anyhow::Result<Endpoint> {
            let iface = crate::smoltcp_echo::interface(&mut dev, mac, ip, now)?;
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; buf]),
                tcp::SocketBuffer::new(vec![0u8; buf]),
            );
            let mut sockets = SocketSet::new(Vec::with_capacity(1));
            let sock = sockets.add(socket);
            Ok(Endpoint {
                iface,
                dev,
                sockets,
                sock,
            })
        }

        pub fn poll(&mut self, now: SInstant) {
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
        }

        pub fn flush(&mut self, now: SInstant) {
            while self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets)
                != PollResult::None
            {}
        }

        pub fn socket(&mut self) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(self.sock)
        }
    }
}

/// smoltcp's bulk transfer over a [`CopyDevice`] pair: same loop as [`CnetBulk`].
pub struct SmoltcpBulk {
    client: smol::Endpoint,
    server: smol::Endpoint,
    now: smoltcp::time::Instant,
    step: smoltcp::time::Duration,
    src: Vec<u8>,
    rbuf: Vec<u8>,
    sent: u64,
    received: u64,
    verify: bool,
    zero_copy_rx: bool,
}

impl SmoltcpBulk {
    /// Builds both interfaces and opens the connection.
    pub fn new(cfg: &BulkConfig) -> anyhow::Result<SmoltcpBulk> {
        let now = smoltcp::time::Instant::from_micros(0);
        let (dc, ds) = CopyDevice::pair();
        let buf = cfg.buf as usize;
        let mut b = SmoltcpBulk {
            client: smol::Endpoint::new(dc, CLIENT_MAC, CLIENT_IP, buf, now)?,
            server: smol::Endpoint::new(ds, SERVER_MAC, SERVER_IP, buf, now)?,
            now,
            step: smoltcp::time::Duration::from_micros(cfg.step_us),
            src: source(),
            rbuf: vec![0; READ_BUF],
            sent: 0,
            received: 0,
            verify: cfg.verify,
            zero_copy_rx: cfg.zero_copy_rx,
        };
        b.server
            .socket()
            .listen(SERVER_PORT_TCP)
            .map_err(|e| anyhow::anyhow!("smoltcp listen: {e}"))?;
        let cx = b.client.iface.context();
        let sock = b
            .client
            .sockets
            .get_mut::<smoltcp::socket::tcp::Socket>(b.client.sock);
        sock.connect(cx, (SERVER_IP, SERVER_PORT_TCP), CLIENT_PORT)
            .map_err(|e| anyhow::anyhow!("smoltcp connect: {e}"))?;
        for _ in 0..1000 {
            b.client.poll(b.now);
            b.server.poll(b.now);
            b.now += b.step;
            if b.client.socket().may_send() && b.server.socket().may_recv() {
                return Ok(b);
            }
        }
        anyhow::bail!(
            "smoltcp: no connection after 1000 steps ({} / {})",
            b.client.socket().state(),
            b.server.socket().state()
        )
    }

    /// Frames the server (receiver) has sent so far, and of those the small ones (pure ACKs).
    pub fn server_frames(&self) -> (u64, u64) {
        let w = self.server.dev.wire();
        (w.pushed[1], w.small[1])
    }

    /// Reads what the server has received: copied with `recv_slice`, or in place with `recv`
    /// (`zero_copy_rx`). Returns the bytes read.
    fn server_read(&mut self) -> anyhow::Result<u64> {
        let (verify, zc, at) = (self.verify, self.zero_copy_rx, self.received);
        let sock = self.server.socket();
        let mut n = 0u64;
        loop {
            let k = if zc {
                // The ring's contiguous readable part, consumed whole.
                sock.recv(|buf| {
                    let ok = !verify || check(buf, at + n).is_ok();
                    let k = if ok { buf.len() } else { 0 };
                    (k, (k, ok))
                })
                .map_err(|e| anyhow::anyhow!("smoltcp recv: {e}"))
                .and_then(|(k, ok)| match ok {
                    true => Ok(k),
                    false => anyhow::bail!("smoltcp: wrong byte near offset {}", at + n),
                })?
            } else {
                let k = sock
                    .recv_slice(&mut self.rbuf)
                    .map_err(|e| anyhow::anyhow!("smoltcp recv_slice: {e}"))?;
                if verify {
                    check(&self.rbuf[..k], at + n)?;
                }
                k
            };
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        self.received += n;
        Ok(n)
    }

    /// Transfers `n` more bytes; returns loop steps.
    pub fn transfer(&mut self, n: u64) -> anyhow::Result<u64> {
        let target = self.received + n;
        let (mut steps, mut idle) = (0u64, 0u64);
        while self.received < target {
            self.client.poll(self.now);
            let sock = self.client.socket();
            while self.sent < target {
                let off = (self.sent % WRITE_CHUNK as u64) as usize;
                let k = ((target - self.sent) as usize).min(WRITE_CHUNK);
                let taken = sock
                    .send_slice(&self.src[off..off + k])
                    .map_err(|e| anyhow::anyhow!("smoltcp send_slice: {e}"))?;
                self.sent += taken as u64;
                if taken < k {
                    break;
                }
            }
            self.client.flush(self.now);
            self.server.poll(self.now);
            let before = self.received;
            self.server_read()?;
            self.server.flush(self.now);
            self.now += self.step;
            steps += 1;
            idle = if self.received == before { idle + 1 } else { 0 };
            anyhow::ensure!(
                idle < MAX_IDLE_STEPS,
                "smoltcp bulk stuck at {} of {target} bytes",
                self.received
            );
        }
        Ok(steps)
    }
}

/// Either stack's bulk transfer, by name: `cnet`, `cnet-ts` (timestamps on), `smoltcp`, or
/// `cnet-zc` / `smoltcp-zc` (zero-copy receive, [`BulkConfig::zero_copy_rx`]).
pub enum Bulk {
    /// cnet.
    Cnet(Box<CnetBulk>),
    /// smoltcp.
    Smoltcp(Box<SmoltcpBulk>),
}

/// Variants of the bulk benchmark, in run order.
pub const BULK_VARIANTS: [&str; 5] = ["cnet", "cnet-ts", "smoltcp", "cnet-zc", "smoltcp-zc"];

impl Bulk {
    /// Builds and connects the named variant.
    pub fn new(name: &str, cfg: &BulkConfig) -> anyhow::Result<Bulk> {
        match name {
            "cnet" => Ok(Bulk::Cnet(Box::new(CnetBulk::new(cfg)?))),
            "cnet-ts" => Ok(Bulk::Cnet(Box::new(CnetBulk::new(&BulkConfig {
                cnet_timestamps: true,
                ..*cfg
            })?))),
            "smoltcp" => Ok(Bulk::Smoltcp(Box::new(SmoltcpBulk::new(cfg)?))),
            "cnet-zc" => Ok(Bulk::Cnet(Box::new(CnetBulk::new(&BulkConfig {
                zero_copy_rx: true,
                ..*cfg
            })?))),
            "smoltcp-zc" => Ok(Bulk::Smoltcp(Box::new(SmoltcpBulk::new(&BulkConfig {
                zero_copy_rx: true,
                ..*cfg
            })?))),
            other => anyhow::bail!("unknown variant {other:?} (one of {BULK_VARIANTS:?})"),
        }
    }

    /// Transfers `n` bytes; returns loop steps.
    pub fn transfer(&mut self, n: u64) -> anyhow::Result<u64> {
        match self {
            Bulk::Cnet(b) => b.transfer(n),
            Bulk::Smoltcp(b) => b.transfer(n),
        }
    }

    /// Frames the server (receiver) has sent so far, and of those the small ones (pure ACKs).
    pub fn server_frames(&self) -> (u64, u64) {
        match self {
            Bulk::Cnet(b) => b.server_frames(),
            Bulk::Smoltcp(b) => b.server_frames(),
        }
    }

    /// Warm-up, then the timed transfer.
    pub fn run(&mut self, cfg: &BulkConfig) -> anyhow::Result<BulkResult> {
        if cfg.warmup > 0 {
            self.transfer(cfg.warmup)?;
        }
        let (f0, a0) = self.server_frames();
        let t = std::time::Instant::now();
        let c = crate::cpu::thread_cpu_secs();
        let steps = self.transfer(cfg.bytes)?;
        let cpu_secs = crate::cpu::thread_cpu_secs() - c;
        let secs = t.elapsed().as_secs_f64();
        let (f1, a1) = self.server_frames();
        Ok(BulkResult {
            bytes: cfg.bytes,
            secs,
            cpu_secs,
            steps,
            server_frames: f1 - f0,
            acks: a1 - a0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant moves every byte intact (small transfer, verified).
    #[test]
    fn bulk_variants_transfer_intact() {
        let cfg = BulkConfig {
            bytes: 3 << 20,
            warmup: 100_000,
            buf: 1 << 20,
            verify: true,
            ..BulkConfig::default()
        };
        for v in BULK_VARIANTS {
            let mut b = Bulk::new(v, &cfg).expect(v);
            let r = b.run(&cfg).expect(v);
            assert_eq!(r.bytes, cfg.bytes);
            assert!(r.steps > 0, "{v}");
        }
    }
}
