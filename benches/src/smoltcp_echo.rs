//! The smoltcp 0.14 side: two [`Interface`]s, each with a [`SocketSet`] holding one UDP socket,
//! over a pair of [`CopyDevice`]s.
//!
//! [`CopyDevice`] moves bytes the way cnet's `CopyPort` does, over the same [`Wire`]: a
//! transmitted frame is built by smoltcp in a device-owned transmit buffer (cnet: a pool frame),
//! then copied into a slot of the wire's ring; on receive the slot is copied into a device-owned
//! receive buffer (cnet: a freshly allocated pool frame). One copy each way on both sides, no heap
//! allocation in steady state, no impairment dice, no delivery heap.
//!
//! smoltcp has no static neighbour entries: ARP resolves during the first loop steps, which the
//! benchmark's warm-up covers (entries live 60 s; a run stays far below that in virtual time).
//! Checksums: [`ChecksumCapabilities::default`], computed on transmit and verified on receive.

use crate::link::Wire;
use crate::{
    EchoPair, Workload, CLIENT_IP, CLIENT_MAC, CLIENT_PORT, ECHO_PORT, FRAMES, MAX_IDLE_STEPS, MTU,
    PREFIX_LEN, SERVER_IP, SERVER_MAC,
};
use anyhow::Context as _;
use core::net::Ipv4Addr;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use std::cell::RefCell;
use std::rc::Rc;

/// Longest Ethernet frame on the link.
const MAX_FRAME: usize = MTU + 14;

/// One end of an in-memory Ethernet link that copies every frame in and out (see the module docs),
/// over the same [`Wire`] as cnet's `CopyPort`.
#[derive(Debug)]
pub struct CopyDevice {
    wire: Rc<RefCell<Wire>>,
    /// The side of the wire this end transmits from.
    side: usize,
    tx_buf: Box<[u8]>,
    rx_buf: Box<[u8]>,
}

impl CopyDevice {
    /// The wire this end is on (its counters).
    pub fn wire(&self) -> std::cell::Ref<'_, Wire> {
        self.wire.borrow()
    }

    /// A connected pair of devices.
    pub fn pair() -> (CopyDevice, CopyDevice) {
        let wire = Wire::shared();
        let end = |side| CopyDevice {
            wire: Rc::clone(&wire),
            side,
            tx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            rx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
        };
        (end(0), end(1))
    }
}

/// A received frame, already copied into the device's receive buffer.
pub struct CopyRxToken<'a> {
    frame: &'a [u8],
}

/// Room to build one frame in the device's transmit buffer; put on the wire on consume.
pub struct CopyTxToken<'a> {
    wire: &'a RefCell<Wire>,
    side: usize,
    buf: &'a mut [u8],
}

impl phy::RxToken for CopyRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

impl phy::TxToken for CopyTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // smoltcp never asks for more than the MTU it was told; a longer frame is a bug there.
        let frame = &mut self.buf[..len];
        let r = f(frame);
        self.wire.borrow_mut().push(self.side, frame);
        r
    }
}

impl Device for CopyDevice {
    type RxToken<'a> = CopyRxToken<'a>;
    type TxToken<'a> = CopyTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(CopyRxToken<'_>, CopyTxToken<'_>)> {
        let len = self
            .wire
            .borrow_mut()
            .pop_into(self.side, &mut self.rx_buf)?;
        Some((
            CopyRxToken {
                frame: &self.rx_buf[..len],
            },
            CopyTxToken {
                wire: &self.wire,
                side: self.side,
                buf: &mut self.tx_buf,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<CopyTxToken<'_>> {
        Some(CopyTxToken {
            wire: &self.wire,
            side: self.side,
            buf: &mut self.tx_buf,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        caps.max_transmission_unit = MAX_FRAME;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

/// One smoltcp endpoint: interface, device, socket set with one UDP socket.
struct Endpoint {
    iface: Interface,
    dev: CopyDevice,
    sockets: SocketSet<'static>,
    sock: SocketHandle,
}

/// A smoltcp interface on `dev` with `mac` and `ip`/PREFIX_LEN, seeded from the MAC (shared by the
/// UDP and TCP benchmarks so both configure smoltcp the same way).
pub(crate) fn interface(
    dev: &mut CopyDevice,
    mac: [u8; 6],
    ip: Ipv4Addr,
    now: Instant,
) -> anyhow::Result<Interface> {
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = u64::from(mac[5]);
    let mut iface = Interface::new(config, dev, now);
    let mut pushed = Ok(());
    iface.update_ip_addrs(|addrs| {
        pushed = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), PREFIX_LEN));
    });
    pushed.map_err(|_| anyhow::anyhow!("smoltcp interface address list full"))?;
    Ok(iface)
}

impl Endpoint {
    fn new(
        mut dev: CopyDevice,
        mac: [u8; 6],
        ip: Ipv4Addr,
        port: u16,
        now: Instant,
    ) -> anyhow::Result<Endpoint> {
        let iface = interface(&mut dev, mac, ip, now)?;
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; FRAMES],
                vec![0u8; FRAMES * MAX_FRAME],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket
            .bind(port)
            .map_err(|e| anyhow::anyhow!("smoltcp bind to port {port}: {e}"))?;
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let sock = sockets.add(socket);
        Ok(Endpoint {
            iface,
            dev,
            sockets,
            sock,
        })
    }

    /// Receive everything queued, then transmit (smoltcp's `poll`).
    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    /// Transmit only: `poll_egress` (one packet per socket per call) until it has nothing left,
    /// as `poll` does after ingress. The analogue of cnet's `Host::flush`.
    fn flush(&mut self, now: Instant) {
        while self
            .iface
            .poll_egress(now, &mut self.dev, &mut self.sockets)
            != PollResult::None
        {}
    }

    fn socket(&mut self) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(self.sock)
    }

    /// Adds `n` idle UDP sockets bound to [`crate::IDLE_PORT_BASE`]`..+n`, after the echo socket
    /// or (`before`) ahead of it in the socket set's order.
    fn add_idle(&mut self, n: usize, before: bool) -> anyhow::Result<()> {
        let echo = before.then(|| self.sockets.remove(self.sock));
        for i in 0..n {
            let port = crate::IDLE_PORT_BASE + i as u16;
            // Idle: one datagram of buffer each way is enough, they never carry traffic.
            let buffer =
                || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0u8; 64]);
            let mut socket = udp::Socket::new(buffer(), buffer());
            socket
                .bind(port)
                .map_err(|e| anyhow::anyhow!("smoltcp bind to idle port {port}: {e}"))?;
            self.sockets.add(socket);
        }
        if let Some(echo) = echo {
            // `SocketSet::add` fills the first free slot: every slot is taken, so this goes last.
            self.sock = self.sockets.add(echo);
        }
        Ok(())
    }
}

/// A smoltcp client and echo server over a [`CopyDevice`] pair.
pub struct SmoltcpEcho {
    client: Endpoint,
    server: Endpoint,
    server_ep: IpEndpoint,
    payload: Vec<u8>,
    window: u64,
    step_us: i64,
    now: Instant,
    /// The server application's copy of one datagram (smoltcp's API lends it only until the next
    /// socket call).
    scratch: Vec<u8>,
}

impl SmoltcpEcho {
    /// Builds both interfaces, the devices and the two sockets.
    pub fn new(w: Workload) -> anyhow::Result<SmoltcpEcho> {
        let now = Instant::from_micros(0);
        let (dc, ds) = CopyDevice::pair();
        Ok(SmoltcpEcho {
            client: Endpoint::new(dc, CLIENT_MAC, CLIENT_IP, CLIENT_PORT, now)?,
            server: Endpoint::new(ds, SERVER_MAC, SERVER_IP, ECHO_PORT, now)?,
            server_ep: IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), ECHO_PORT),
            payload: w.payload_bytes(),
            window: w.window as u64,
            step_us: i64::try_from(w.step_us).context("step too large")?,
            now,
            scratch: vec![0u8; MAX_FRAME],
        })
    }
}

impl EchoPair for SmoltcpEcho {
    fn name(&self) -> &'static str {
        "smoltcp"
    }

    fn add_idle_sockets(&mut self, n: usize, before: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            n <= crate::MAX_IDLE_SOCKETS,
            "at most {} idle sockets",
            crate::MAX_IDLE_SOCKETS
        );
        self.client.add_idle(n, before)?;
        self.server.add_idle(n, before)
    }

    fn run(&mut self, n: u64) -> anyhow::Result<u64> {
        let (mut sent, mut received, mut steps, mut idle) = (0u64, 0u64, 0u64, 0u64);
        while received < n {
            // Client: replies in, queued requests out.
            self.client.poll(self.now);
            let mut got = 0u64;
            let plen = self.payload.len();
            let sock = self.client.socket();
            while let Ok((data, _meta)) = sock.recv() {
                anyhow::ensure!(data.len() == plen, "reply of {} bytes", data.len());
                got += 1;
            }
            received += got;
            while sent - received < self.window && sent < n {
                sock.send_slice(&self.payload, self.server_ep)
                    .map_err(|e| anyhow::anyhow!("client send_slice: {e}"))?;
                sent += 1;
            }
            self.client.flush(self.now);

            // Server: requests in, each copied out and sent back.
            self.server.poll(self.now);
            let sock = self.server.socket();
            while let Ok((len, meta)) = sock.recv_slice(&mut self.scratch) {
                sock.send_slice(&self.scratch[..len], meta.endpoint)
                    .map_err(|e| anyhow::anyhow!("server send_slice: {e}"))?;
            }
            self.server.flush(self.now);

            self.now += smoltcp::time::Duration::from_micros(self.step_us as u64);
            steps += 1;
            idle = if got == 0 { idle + 1 } else { 0 };
            anyhow::ensure!(
                idle < MAX_IDLE_STEPS,
                "smoltcp echo stuck: {sent} sent, {received} echoed"
            );
        }
        Ok(steps)
    }
}
