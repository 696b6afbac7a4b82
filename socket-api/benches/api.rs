//! The socket API's paths, measured in one run over the same in-memory link (`PipePort`), same
//! build: UDP echo round trips of 64 B between two runtimes (client on A, server on B), each
//! side on one of four paths:
//!
//! - `loop`: both apps inside the owner loops (`LoopApp`, direct `&mut Stack` calls);
//! - `thread zero-copy`: blocking sockets on plain threads, `recv_from` + `SendBuf`;
//! - `thread copy`: blocking sockets, `recv_from_slice` + `send_to`;
//! - `tokio`: the tokio adapter on a current-thread runtime per side.
//!
//! Window 1 (one message in flight: latency) and window 16 (throughput). Prints messages/s,
//! p50/p99 round-trip time (HDR histogram) and each path's ratio to `loop`.
//!
//! `cargo bench -p cnet-socket --bench api [-- --quick] [--size N]` (64 B by default, up to 1472).

use cnet_drivers::host::Host;
use cnet_drivers::pipe::pipe;
use cnet_socket::{Limits, LoopApp, QueueSetup, Runtime, UdpSocket};
use cnet_stack::{
    ConfigEvent, IfAddr, Instant, MacAddr, Neighbor, Pool, Stack, StackConfig, UdpHandle,
};
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

const MAC_A: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0b]);
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 7;

fn stack(mac: MacAddr, ip: Ipv4Addr, peer: (Ipv4Addr, MacAddr)) -> Stack {
    let pool = Pool::new(4096, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let mut s = Stack::new(StackConfig::new(mac), pool);
    let t = Instant::ZERO;
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: 24,
        }),
        t,
    );
    s.apply_config(
        ConfigEvent::NeighborSet(Neighbor {
            ip: peer.0,
            mac: peer.1,
            permanent: true,
        }),
        t,
    );
    s
}

type Apps = Box<dyn FnOnce(&mut Stack) -> Vec<Box<dyn LoopApp>>>;

/// Two runtimes; each side's in-loop apps are built (and bind) before its thread starts.
fn pair(apps_a: Apps, apps_b: Apps) -> (Runtime, Runtime) {
    let (pa, pb) = pipe(MAC_A, MAC_B, 1500, 4096).unwrap();
    let mut a = stack(MAC_A, IP_A, (IP_B, MAC_B));
    let mut b = stack(MAC_B, IP_B, (IP_A, MAC_A));
    let (aa, ab) = (apps_a(&mut a), apps_b(&mut b));
    let mut sa = QueueSetup::new(Host::new(a, pa));
    sa.apps = aa;
    let mut sb = QueueSetup::new(Host::new(b, pb));
    sb.apps = ab;
    let l = Limits::default();
    (
        Runtime::start(vec![sa], l).unwrap(),
        Runtime::start(vec![sb], l).unwrap(),
    )
}

struct Result {
    msgs: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Result {
    fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs
    }
}

/// Echo server inside B's loop.
struct LoopServer(UdpHandle);
impl LoopApp for LoopServer {
    fn poll(&mut self, stack: &mut Stack, now: Instant) {
        let h = self.0;
        while let Some(d) = stack.udp_recv(h) {
            let _ = stack.udp_send(h, d.frame, d.src, now);
        }
    }
}

/// Client inside A's loop: keeps `window` messages in flight, records round trips.
struct LoopClient {
    h: UdpHandle,
    window: usize,
    inflight: std::collections::VecDeque<std::time::Instant>,
    left: u64,
    out: Arc<Mutex<Option<Histogram<u64>>>>,
    hist: Histogram<u64>,
    done: Arc<AtomicBool>,
    msg: Vec<u8>,
}
impl LoopApp for LoopClient {
    fn poll(&mut self, stack: &mut Stack, now: Instant) {
        let h = self.h;
        while let Some(d) = stack.udp_recv(h) {
            stack.pool_mut().free(d.frame);
            if let Some(t) = self.inflight.pop_front() {
                let _ = self.hist.record(t.elapsed().as_nanos() as u64);
            }
        }
        while self.inflight.len() < self.window && self.left > 0 {
            if stack
                .udp_send_slice(h, &self.msg, SocketAddrV4::new(IP_B, PORT), now)
                .is_err()
            {
                break;
            }
            self.left -= 1;
            self.inflight.push_back(std::time::Instant::now());
        }
        if self.left == 0 && self.inflight.is_empty() && !self.done.load(SeqCst) {
            *self.out.lock().unwrap() = Some(self.hist.clone());
            self.done.store(true, SeqCst);
        }
    }
}

fn run_loop(n: u64, window: usize, size: usize) -> Result {
    let out = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let (o2, d2) = (out.clone(), done.clone());
    let client: Apps = Box::new(move |s: &mut Stack| -> Vec<Box<dyn LoopApp>> {
        vec![Box::new(LoopClient {
            h: s.udp_bind(SocketAddrV4::new(IP_A, 0)).unwrap(),
            window,
            inflight: Default::default(),
            left: n,
            out: o2,
            hist: Histogram::new(3).unwrap(),
            done: d2,
            msg: vec![0u8; size],
        })]
    });
    let server: Apps = Box::new(|s: &mut Stack| -> Vec<Box<dyn LoopApp>> {
        vec![Box::new(LoopServer(
            s.udp_bind(SocketAddrV4::new(IP_B, PORT)).unwrap(),
        ))]
    });
    let start = StdInstant::now();
    let (a, b) = pair(client, server);
    while !done.load(SeqCst) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    a.join();
    b.join();
    let hist = out
        .lock()
        .unwrap()
        .take()
        .expect("the loop client finished within 30 s");
    Result {
        msgs: n,
        secs,
        hist,
    }
}

fn run_threads(n: u64, window: usize, zero_copy: bool, size: usize) -> Result {
    let (a, b) = pair(Box::new(|_| vec![]), Box::new(|_| vec![]));
    let server = UdpSocket::bind(&b, SocketAddrV4::new(IP_B, PORT)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let srv = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut server = server;
        server.set_read_timeout(Some(Duration::from_millis(50)));
        while !st.load(SeqCst) {
            if zero_copy {
                let Ok(d) = server.recv_from() else { continue };
                let mut o = server.alloc().unwrap();
                o.put(d.as_slice().unwrap());
                server.send_buf_to(o, d.src).unwrap();
            } else {
                let Ok((k, src)) = server.recv_from_slice(&mut buf) else {
                    continue;
                };
                server.send_to(&buf[..k], src).unwrap();
            }
        }
    });
    let client = UdpSocket::bind(&a, SocketAddrV4::new(IP_A, 0)).unwrap();
    let dst = SocketAddrV4::new(IP_B, PORT);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut inflight = std::collections::VecDeque::new();
    let msg = vec![0u8; size];
    let mut buf = [0u8; 2048];
    let start = StdInstant::now();
    let mut sent = 0;
    let mut got = 0;
    while got < n && start.elapsed() < Duration::from_secs(30) {
        while inflight.len() < window && sent < n {
            if zero_copy {
                let mut o = client.alloc().unwrap();
                o.put(&msg);
                client.send_buf_to(o, dst).unwrap();
            } else {
                client.send_to(&msg, dst).unwrap();
            }
            inflight.push_back(StdInstant::now());
            sent += 1;
        }
        if zero_copy {
            drop(client.recv_from().unwrap());
        } else {
            client.recv_from_slice(&mut buf).unwrap();
        }
        got += 1;
        let t: StdInstant = inflight.pop_front().unwrap();
        let _ = hist.record(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, SeqCst);
    srv.join().unwrap();
    drop(client);
    a.join();
    b.join();
    Result {
        msgs: got,
        secs,
        hist,
    }
}

fn run_tokio(n: u64, window: usize, size: usize) -> Result {
    let (a, b) = pair(Box::new(|_| vec![]), Box::new(|_| vec![]));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let b2 = b.clone();
    let srv = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let s = cnet_socket::tokio::UdpSocket::bind(&b2, SocketAddrV4::new(IP_B, PORT))
                .await
                .unwrap();
            let mut buf = [0u8; 2048];
            while !st.load(SeqCst) {
                let r =
                    tokio::time::timeout(Duration::from_millis(50), s.recv_from(&mut buf)).await;
                if let Ok(Ok((k, src))) = r {
                    s.send_to(&buf[..k], src).await.unwrap();
                }
            }
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let a2 = a.clone();
    let (hist, secs) = rt.block_on(async move {
        let c = cnet_socket::tokio::UdpSocket::bind(&a2, SocketAddrV4::new(IP_A, 0))
            .await
            .unwrap();
        let dst = SocketAddrV4::new(IP_B, PORT);
        let msg = vec![0u8; size];
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut inflight = std::collections::VecDeque::new();
        let mut buf = [0u8; 2048];
        let start = StdInstant::now();
        let (mut sent, mut got) = (0, 0);
        while got < n && start.elapsed() < Duration::from_secs(30) {
            while inflight.len() < window && sent < n {
                c.send_to(&msg, dst).await.unwrap();
                inflight.push_back(StdInstant::now());
                sent += 1;
            }
            c.recv_from(&mut buf).await.unwrap();
            got += 1;
            let t: StdInstant = inflight.pop_front().unwrap();
            let _ = hist.record(t.elapsed().as_nanos() as u64);
        }
        d2.store(got, SeqCst);
        (hist, start.elapsed().as_secs_f64())
    });
    stop.store(true, SeqCst);
    srv.join().unwrap();
    a.join();
    b.join();
    Result {
        msgs: done.load(SeqCst),
        secs,
        hist,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let size: usize = args
        .iter()
        .position(|a| a == "--size")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        .clamp(1, 1472);
    let n: u64 = if quick { 5_000 } else { 50_000 };
    println!("socket-api UDP echo, {size} B, {n} round trips per case, in memory (PipePort)");
    println!(
        "{:<22} {:>6} {:>12} {:>10} {:>10} {:>8}",
        "path", "window", "msgs/s", "p50 us", "p99 us", "vs loop"
    );
    for window in [1usize, 16] {
        let base = run_loop(n, window, size);
        let cases: Vec<(&str, Result)> = vec![
            ("loop (same thread)", base),
            ("thread zero-copy", run_threads(n, window, true, size)),
            ("thread copy", run_threads(n, window, false, size)),
            ("tokio current-thread", run_tokio(n, window, size)),
        ];
        let base_rate = cases[0].1.rate();
        for (name, r) in &cases {
            println!(
                "{:<22} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>7.2}x",
                name,
                window,
                r.rate(),
                r.hist.value_at_quantile(0.5) as f64 / 1000.0,
                r.hist.value_at_quantile(0.99) as f64 / 1000.0,
                r.rate() / base_rate
            );
        }
    }
}
