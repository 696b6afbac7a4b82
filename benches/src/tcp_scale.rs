//! Many established TCP connections between two cnet stacks over the in-memory link (issue #6):
//! the cost of one echoed packet on one active connection with N idle ones beside it, and the
//! heap each idle connection takes.
//!
//! Idle connections: the client opens them from explicit local ports `1024..=65535` of its
//! address towards server ports [`IDLE_PORT_BASE`]`..` (one listener per 64,512 connections), so
//! the 4-tuple space is never short and no ephemeral-port search runs; the server accepts them
//! all. Both ends keep their handles; no data moves on them afterwards (no keepalive, so no
//! timers either).
//!
//! Active connection: client port [`CLIENT_PORT`] to server port [`ECHO_PORT_TCP`], Nagle off on
//! both ends. The client keeps `window` messages of `payload` bytes outstanding, each in its own
//! frame (`tcp_alloc`, payload copied in, `tcp_send`: zero copy from there); the server sends
//! every received frame back as it came (`tcp_recv` then `tcp_send` of the same frame, like
//! `cnet_apps::service::TcpEcho`); the client reads the replies (`tcp_recv`, then frees them)
//! and counts bytes. One *echoed packet* = one request and its reply.

use crate::tcp_mem::{handshake, CnetTcpPair};
use crate::{CLIENT_IP, CLIENT_PORT, MAX_IDLE_STEPS, SERVER_IP};
use anyhow::Context as _;
use cnet_stack::tcp::{TcpHandle, TcpListener, TcpOpts, TcpState};
use core::net::SocketAddrV4;

/// The echo connection's server port.
pub const ECHO_PORT_TCP: u16 = 7;
/// First server port of the idle connections.
pub const IDLE_PORT_BASE: u16 = 10_000;
/// Client ports the idle connections use per server port (`1024..=65535`).
pub const PORTS_PER_LISTENER: usize = 65535 - 1024 + 1;
/// Connects the client issues per loop step while establishing (below the SYN backlog).
pub const CONNECT_BATCH: usize = 128;

/// Parameters of a scaling run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleConfig {
    /// Idle established connections.
    pub conns: usize,
    /// Echo payload bytes.
    pub payload: usize,
    /// Messages outstanding on the echo connection.
    pub window: usize,
    /// Frames in each stack's pool.
    pub frames: usize,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            conns: 10,
            payload: 64,
            window: 8,
            frames: 4096,
        }
    }
}

/// Two cnet stacks with `conns` idle connections and one echo connection.
pub struct Scale {
    /// The pair.
    pub pair: CnetTcpPair,
    listeners: Vec<TcpListener>,
    /// Client handles of the idle connections.
    pub idle_client: Vec<TcpHandle>,
    /// Server handles of the idle connections.
    pub idle_server: Vec<TcpHandle>,
    echo_client: Option<TcpHandle>,
    echo_server: Option<TcpHandle>,
    payload: Vec<u8>,
    window: u64,
    /// Bytes echoed back to the client so far.
    pub echoed_bytes: u64,
    sent_bytes: u64,
}

impl Scale {
    /// Both stacks and the listeners; no connection yet. Handle vectors are reserved up front, so
    /// heap growth measured across [`Scale::establish`] is the stacks' own.
    pub fn new(cfg: &ScaleConfig) -> anyhow::Result<Scale> {
        anyhow::ensure!(cfg.payload > 0 && cfg.payload <= 1400, "payload 1..=1400");
        anyhow::ensure!(cfg.window > 0, "window at least 1");
        let max = cfg.conns + 16;
        let mut pair = CnetTcpPair::new(cfg.frames, 10, |c| {
            c.tcp_max_connections = max;
        })?;
        let n_listeners = cfg.conns.div_ceil(PORTS_PER_LISTENER);
        let mut listeners = Vec::with_capacity(n_listeners + 1);
        let opts = TcpOpts {
            nodelay: true,
            ..TcpOpts::default()
        };
        for i in 0..=n_listeners {
            let port = if i == 0 {
                ECHO_PORT_TCP
            } else {
                IDLE_PORT_BASE + (i - 1) as u16
            };
            listeners.push(
                pair.server
                    .stack
                    .tcp_listen(SocketAddrV4::new(SERVER_IP, port), 4096, opts)
                    .with_context(|| format!("listen on {port}"))?,
            );
        }
        Ok(Scale {
            pair,
            listeners,
            idle_client: Vec::with_capacity(cfg.conns),
            idle_server: Vec::with_capacity(cfg.conns),
            echo_client: None,
            echo_server: None,
            payload: (0..cfg.payload).map(|i| (i * 7 + 1) as u8).collect(),
            window: cfg.window as u64,
            echoed_bytes: 0,
            sent_bytes: 0,
        })
    }

    /// Opens and accepts `n` idle connections (in batches of [`CONNECT_BATCH`] per loop step);
    /// checks every one is ESTABLISHED on both ends.
    pub fn establish(&mut self, n: usize) -> anyhow::Result<()> {
        let p = &mut self.pair;
        let mut opened = 0usize;
        let mut idle = 0u64;
        let target_server = self.idle_server.len() + n;
        let first = self.idle_client.len();
        while self.idle_server.len() < target_server {
            p.client_poll()?;
            let batch_end = (opened + CONNECT_BATCH).min(n);
            while opened < batch_end {
                let i = first + opened;
                let lport = 1024 + (i % PORTS_PER_LISTENER) as u16;
                let rport = IDLE_PORT_BASE + (i / PORTS_PER_LISTENER) as u16;
                let h = p
                    .client
                    .stack
                    .tcp_connect(
                        SocketAddrV4::new(SERVER_IP, rport),
                        Some(SocketAddrV4::new(CLIENT_IP, lport)),
                        TcpOpts::default(),
                        p.now,
                    )
                    .with_context(|| format!("connect #{i} from port {lport} to {rport}"))?;
                self.idle_client.push(h);
                opened += 1;
            }
            p.client_flush()?;
            p.server_poll()?;
            let before = self.idle_server.len();
            for l in &self.listeners[1..] {
                while let Some(h) = p.server.stack.tcp_accept(*l) {
                    self.idle_server.push(h);
                }
            }
            p.server_flush()?;
            p.tick();
            idle = if self.idle_server.len() == before {
                idle + 1
            } else {
                0
            };
            anyhow::ensure!(
                idle < 10_000,
                "establishing stuck: {} opened, {} accepted; server counters {:?}",
                opened,
                self.idle_server.len(),
                p.server.stack.counters()
            );
        }
        // Let the last ACKs land.
        for _ in 0..4 {
            p.client_poll()?;
            p.server_poll()?;
            p.tick();
        }
        for (who, stack, hs) in [
            ("client", &p.client.stack, &self.idle_client),
            ("server", &p.server.stack, &self.idle_server),
        ] {
            for h in hs {
                let st = stack.tcp_state(*h);
                anyhow::ensure!(
                    st == Some(TcpState::Established),
                    "{who} connection not established: {st:?}"
                );
            }
        }
        Ok(())
    }

    /// Opens the echo connection and sends `warmup` echoes over it.
    pub fn open_echo(&mut self, warmup: u64) -> anyhow::Result<()> {
        let p = &mut self.pair;
        let opts = TcpOpts {
            nodelay: true,
            ..TcpOpts::default()
        };
        let c = p
            .client
            .stack
            .tcp_connect(
                SocketAddrV4::new(SERVER_IP, ECHO_PORT_TCP),
                Some(SocketAddrV4::new(CLIENT_IP, CLIENT_PORT)),
                opts,
                p.now,
            )
            .context("connect the echo connection")?;
        let s = handshake(p, self.listeners[0], c)?;
        self.echo_client = Some(c);
        self.echo_server = Some(s);
        self.echo(warmup).map(|_| ())
    }

    fn send_request(&mut self) -> anyhow::Result<()> {
        let p = &mut self.pair;
        let h = self.echo_client.context("no echo connection")?;
        let stack = &mut p.client.stack;
        let f = stack.tcp_alloc().context("client pool exhausted")?;
        match stack.pool_mut().push_back(&f, self.payload.len()) {
            Some(b) => b.copy_from_slice(&self.payload),
            None => {
                stack.pool_mut().free(f);
                anyhow::bail!("payload does not fit a frame");
            }
        }
        if let Err((e, f)) = stack.tcp_send(h, f, p.now) {
            stack.pool_mut().free(f);
            anyhow::bail!("client tcp_send: {e}");
        }
        self.sent_bytes += self.payload.len() as u64;
        Ok(())
    }

    /// Echoes `n` more messages; returns loop steps. Ends with nothing outstanding.
    pub fn echo(&mut self, n: u64) -> anyhow::Result<u64> {
        let plen = self.payload.len() as u64;
        let (c, s) = (
            self.echo_client.context("no echo connection")?,
            self.echo_server.context("no echo connection")?,
        );
        let target = self.echoed_bytes + n * plen;
        let (mut steps, mut idle) = (0u64, 0u64);
        while self.echoed_bytes < target {
            self.pair.client_poll()?;
            let before = self.echoed_bytes;
            while let Some(f) = self.pair.client.stack.tcp_recv(c) {
                let pool = self.pair.client.stack.pool_mut();
                self.echoed_bytes += pool.chain_len(&f) as u64;
                pool.free(f);
            }
            while self.sent_bytes < target
                && self.sent_bytes - self.echoed_bytes < self.window * plen
            {
                self.send_request()?;
            }
            self.pair.client_flush()?;
            self.pair.server_poll()?;
            let now = self.pair.now;
            let stack = &mut self.pair.server.stack;
            while let Some(f) = stack.tcp_recv(s) {
                if let Err((e, f)) = stack.tcp_send(s, f, now) {
                    stack.pool_mut().free(f);
                    anyhow::bail!("server tcp_send: {e}");
                }
            }
            self.pair.server_flush()?;
            self.pair.tick();
            steps += 1;
            idle = if self.echoed_bytes == before {
                idle + 1
            } else {
                0
            };
            anyhow::ensure!(
                idle < MAX_IDLE_STEPS,
                "tcp echo stuck: {} of {target} bytes back; client {:?}",
                self.echoed_bytes,
                self.pair.client.stack.tcp_info(c)
            );
        }
        Ok(steps)
    }

    /// Connections in each stack's table.
    pub fn connections(&self) -> (usize, usize) {
        (
            self.pair.client.stack.tcp_connections(),
            self.pair.server.stack.tcp_connections(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_and_echo() {
        let cfg = ScaleConfig {
            conns: 300,
            ..ScaleConfig::default()
        };
        let mut s = Scale::new(&cfg).unwrap();
        s.establish(cfg.conns).unwrap();
        assert_eq!(s.connections(), (300, 300));
        s.open_echo(100).unwrap();
        s.echo(1000).unwrap();
        assert_eq!(s.connections(), (301, 301));
    }
}
