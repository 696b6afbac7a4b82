//! Hostile TCP peers from the Linux kernel's side (issue #12, "and again on AF_XDP against
//! Linux"): `cnet`'s TCP echo on AF_XDP, attacked from the kernel namespace over veth, while an
//! honest kernel client keeps a 32-byte echo round trip going and must keep being served during
//! and right after each attack, and cnet's TCP memory stays within `Stack::tcp_mem_thresholds`.
//! Root only (skipped with a printed reason elsewhere).
//!
//! - Stalled connections: 16 000 ordinary kernel sockets connect and send 5 bytes each; then the
//!   kernel stops acknowledging: its pure ACKs from the attackers' ports are dropped on the veth
//!   by a `u32` filter steering them to a `pfifo limit 0` (this kernel has no `nft`, `iptables`
//!   or tc actions; `htb`, `pfifo` and `u32` are there). The number is bounded by the open-file
//!   limit (20 000 here), 8 times the 2 000 that broke the stack in the issue.
//! - Out-of-order floods: a Python raw-socket peer completes 320 handshakes of its own and sends
//!   300 segments of 100 bytes per connection at seeded random offsets inside the window, never
//!   at RCV.NXT, then goes silent. The kernel's resets for these connections it does not know
//!   are dropped the same way.
//! - A receiver that reneges on SACK: the kernel's own SACKs cannot be told to lie, so a Python
//!   raw-socket receiver in the kernel namespace (`RENEGER`) opens 20 connections, sends 8 000
//!   bytes on each, SACKs the echoed segments after the first, throws them away, then ACKs
//!   honestly (half of them SACK blocks starting at the cumulative ACK instead); every echo
//!   must come back intact and every connection close.
//!
//! The attacks run one at a time (a lock): 2 shared cores, and latency is what is measured.

use cnet_apps::lab::{Lab, KERNEL_DEV, KERNEL_IP, STACK_DEV, STACK_IP};
use cnet_drivers::xdp::XdpConfig;
use cnet_stack::{DropReason, Event, FrameCensus};
use cnet_tests::require_lab;
use cnet_tests::xdp::XdpStack;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One attack at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Attackers' source ports: 40960..45056 (`0xa000/0xf000`) for stalled sockets.
const STALL_PORTS: (u16, u16) = (0xa000, 0xf000);
/// 45056..45568 (`0xb000/0xfe00`) for the out-of-order flooders.
const OOO_PORTS: (u16, u16) = (0xb000, 0xfe00);
/// The honest client's ephemeral ports, outside both.
const HONEST_PORTS: &str = "50000 60999";

/// The honest client's record: (when the echo came back, its round trip), and failures.
#[derive(Default)]
struct Record {
    echoes: Vec<(Instant, Duration)>,
    failures: Vec<(Instant, String)>,
}

impl Record {
    fn since(&self, t: Instant) -> usize {
        self.echoes.iter().filter(|(at, _)| *at >= t).count()
    }
    fn between(&self, a: Instant, b: Instant) -> usize {
        self.echoes
            .iter()
            .filter(|(at, _)| *at >= a && *at < b)
            .count()
    }
    fn worst_since(&self, t: Instant) -> Duration {
        self.echoes
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }
}

/// One echo round trip of `n` on `s`; the round trip time or why it failed.
fn round_trip(s: &mut TcpStream, n: u64) -> Result<Duration, String> {
    let req = format!("honest {n:016}|........");
    assert_eq!(req.len(), 32);
    let t = Instant::now();
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = [0u8; 32];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != req.as_bytes()[..32] {
        return Err("echo corrupted".into());
    }
    Ok(t.elapsed())
}

fn honest_connect() -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(
        &SocketAddrV4::new(STACK_IP, 7).into(),
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The honest client: in the kernel namespace, one request in flight at a time until `stop`;
/// a failed round trip is recorded and the client reconnects.
fn start_honest(lab: &Lab, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Record> {
    let ns = cnet_netlink::netns_path(&lab.kernel_ns);
    std::thread::spawn(move || {
        cnet_netlink::enter_netns(&ns).expect("enter the kernel namespace");
        let mut rec = Record::default();
        let mut conn: Option<TcpStream> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let s = match conn.as_mut() {
                Some(s) => s,
                None => match honest_connect() {
                    Ok(s) => conn.insert(s),
                    Err(e) => {
                        rec.failures.push((Instant::now(), e));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            match round_trip(s, n) {
                Ok(d) => rec.echoes.push((Instant::now(), d)),
                Err(e) => {
                    rec.failures.push((Instant::now(), e));
                    conn = None;
                }
            }
            n += 1;
            // About 500 round trips a second: enough samples, little CPU on 2 shared cores.
            std::thread::sleep(Duration::from_millis(2));
        }
        rec
    })
}

/// A new kernel client's first echo: connect, one round trip; the time both took.
fn fresh_echo(lab: &Lab) -> Result<Duration, String> {
    cnet_tests::xdp::in_kernel(lab, || {
        let t = Instant::now();
        let mut s = honest_connect()?;
        round_trip(&mut s, 0)?;
        Ok(t.elapsed())
    })
}

/// The highest TCP memory charge and the lowest free frame count seen by the stack's loop, the
/// pool's census (who holds the frames) when the free count was lowest, and a census every
/// 500 ms (printed when a case fails, to show where the frames went).
struct Watch {
    max_mem: Arc<AtomicUsize>,
    min_free: Arc<AtomicUsize>,
    at_min: Arc<Mutex<Option<FrameCensus>>>,
    timeline: Arc<Mutex<Vec<(Instant, FrameCensus)>>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// The census at the lowest free count and the timeline (with the honest client's echoes
    /// since the sample before), one line each; times from `t0`.
    fn report(&self, rec: &Record, t0: Instant) -> String {
        let mut s = format!(
            "  census at the lowest free count: {}\n",
            self.at_min
                .lock()
                .unwrap()
                .map_or("none".into(), |c| c.to_string())
        );
        let mut prev = None;
        for (at, c) in self.timeline.lock().unwrap().iter() {
            let t = at.saturating_duration_since(t0).as_secs_f32();
            let echoes = prev.map_or(0, |p| rec.between(p, *at));
            s += &format!("  {t:6.2} s: {echoes:4} echoes; {c}\n");
            prev = Some(*at);
        }
        s
    }
}

fn watch(stack: &XdpStack) -> Watch {
    let w = Watch {
        max_mem: Arc::new(AtomicUsize::new(0)),
        min_free: Arc::new(AtomicUsize::new(usize::MAX)),
        at_min: Arc::new(Mutex::new(None)),
        timeline: Arc::new(Mutex::new(Vec::new())),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (m, f, s) = (w.max_mem.clone(), w.min_free.clone(), w.stop.clone());
    let (at_min, timeline) = (w.at_min.clone(), w.timeline.clone());
    // A census walks every connection: taken when the free count fell 16 below the last one
    // taken (at most capacity / 16 of them) and every 500 ms.
    let mut census_free = usize::MAX;
    let mut next_sample = Instant::now();
    stack.spawn_app(move |st, _| {
        m.fetch_max(st.tcp_mem_frames(), Ordering::Relaxed);
        let free = st.pool().available();
        f.fetch_min(free, Ordering::Relaxed);
        if free + 16 <= census_free || (free < census_free && free < 64) {
            census_free = free;
            *at_min.lock().unwrap() = Some(st.frame_census());
        }
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + Duration::from_millis(500);
            timeline
                .lock()
                .unwrap()
                .push((Instant::now(), st.frame_census()));
        }
        !s.load(Ordering::Relaxed)
    });
    w
}

/// The kernel side's veth gets an `htb` root whose class 1:2 is a `pfifo` of length 0: whatever
/// a `u32` filter steers there is dropped, everything else goes out directly.
fn install_drop_class(lab: &Lab) {
    lab.kernel(&[
        "tc", "qdisc", "add", "dev", KERNEL_DEV, "root", "handle", "1:", "htb",
    ])
    .expect("htb qdisc");
    lab.kernel(&[
        "tc", "class", "add", "dev", KERNEL_DEV, "parent", "1:", "classid", "1:2", "htb", "rate",
        "10gbit",
    ])
    .expect("htb class");
    lab.kernel(&[
        "tc", "qdisc", "add", "dev", KERNEL_DEV, "parent", "1:2", "handle", "20:", "pfifo",
        "limit", "0",
    ])
    .expect("pfifo limit 0");
}

/// Drops the kernel's TCP segments from source ports `ports` (value, mask) whose flags byte,
/// masked by `mask`, equals `flags`.
fn drop_from_ports(lab: &Lab, ports: (u16, u16), flags: u8, mask: u8) {
    let (p, m) = (ports.0.to_string(), format!("{:#x}", ports.1));
    let (f, fm) = (format!("{flags:#x}"), format!("{mask:#x}"));
    lab.kernel(&[
        "tc", "filter", "add", "dev", KERNEL_DEV, "parent", "1:", "protocol", "ip", "prio", "1",
        "u32", "match", "ip", "protocol", "6", "0xff", "match", "ip", "sport", &p, &m, "match",
        "u8", &f, &fm, "at", "33", "flowid", "1:2",
    ])
    .expect("u32 filter");
}

/// Packets the drop class dropped so far.
fn dropped_by_filter(lab: &Lab) -> u64 {
    let out = lab
        .kernel(&["tc", "-s", "qdisc", "show", "dev", KERNEL_DEV])
        .expect("tc -s");
    let text = String::from_utf8_lossy(&out.stdout);
    // "qdisc pfifo 20: ... \n Sent 0 bytes 0 pkt (dropped N, ..."
    let after = text.split("qdisc pfifo 20:").nth(1).unwrap_or("");
    after
        .split("dropped ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The lab, the stack, the honest client's ports and the drop class.
fn setup(prefix: &str, frames: u32) -> (Lab, XdpStack) {
    let lab = Lab::new(prefix, 1).expect("lab");
    lab.kernel(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.ip_local_port_range={HONEST_PORTS}"),
    ])
    .expect("port range");
    install_drop_class(&lab);
    let mut xdp = XdpConfig::new(STACK_DEV);
    xdp.frames = frames;
    let stack = XdpStack::start(&lab, xdp);
    // The stack learned its address: the first echo works.
    fresh_echo(&lab).expect("echo before the attack");
    (lab, stack)
}

/// Raises the open-file limit to its hard limit; returns it.
fn raise_nofile() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, exclusively borrowed struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur as usize
}

/// A kernel TCP socket bound to `src`, connected to cnet's echo port (blocking, 5 s).
fn connect_from(src: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it to
    // TcpStream; the sockaddr is fully initialised and outlives the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let sa = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sa(src);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let remote = sa(SocketAddrV4::new(STACK_IP, 7));
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// Source addresses of the stalled sockets: the kernel side's own plus three more on its veth.
fn stall_sources() -> [Ipv4Addr; 4] {
    [
        KERNEL_IP,
        Ipv4Addr::new(198, 18, 0, 11),
        Ipv4Addr::new(198, 18, 0, 12),
        Ipv4Addr::new(198, 18, 0, 13),
    ]
}

/// The honest client's echoes before the stall attack are counted over this long.
const BASELINE: Duration = Duration::from_secs(1);
/// And after it over this long.
const AFTER: Duration = Duration::from_secs(5);

fn stalled(frames: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_nofile();
    let per_ip = 4000usize;
    // Room for the test's own descriptors and the honest client.
    let n = (per_ip * stall_sources().len()).min(limit.saturating_sub(512));
    assert!(
        n >= 2000,
        "open-file limit {limit} too low for 2 000 stalled sockets"
    );
    let (lab, stack) = setup("chs", frames);
    for ip in &stall_sources()[1..] {
        lab.kernel(&["ip", "addr", "add", &format!("{ip}/32"), "dev", KERNEL_DEV])
            .expect("attacker address");
    }
    let w = watch(&stack);
    let stop = Arc::new(AtomicBool::new(false));
    let honest = start_honest(&lab, stop.clone());
    // The honest client's rate before the attack, on this machine under its current load: the
    // yardstick for its rate after.
    let warm = Instant::now();
    std::thread::sleep(BASELINE);

    let start = Instant::now();
    let ns = cnet_netlink::netns_path(&lab.kernel_ns);
    let (connected_tx, connected_rx) = std::sync::mpsc::channel::<usize>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let attack = std::thread::spawn(move || -> (Vec<TcpStream>, usize) {
        cnet_netlink::enter_netns(&ns).expect("enter the kernel namespace");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut socks = Vec::with_capacity(n);
        'all: for ip in stall_sources() {
            for k in 0..per_ip {
                if socks.len() == n || Instant::now() > deadline {
                    break 'all;
                }
                let port = STALL_PORTS.0 + k as u16;
                match connect_from(SocketAddrV4::new(ip, port)) {
                    Ok(s) => socks.push(s),
                    Err(e) => panic!("attacker {ip}:{port} could not connect: {e}"),
                }
            }
        }
        let _ = connected_tx.send(socks.len());
        if go_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            return (socks, 0);
        }
        let mut written = 0;
        for s in &mut socks {
            if Instant::now() > deadline {
                break;
            }
            if s.write_all(b"stall").is_ok() {
                written += 1;
            }
        }
        (socks, written)
    });
    let connected = connected_rx
        .recv_timeout(Duration::from_secs(90))
        .expect("attackers connected");
    let connect_time = start.elapsed();
    let in_cnet = stack.with(|s, _| s.tcp_connections());
    // From here on the kernel sends no pure ACK from the attackers' ports: cnet's echo of the
    // 5 bytes each is about to send is never acknowledged. (Data segments carry PSH and pass.)
    drop_from_ports(&lab, STALL_PORTS, 0x10, 0xff);
    go_tx.send(()).expect("attack thread waits");
    let (socks, written) = attack.join().expect("attack thread");
    let end = Instant::now();
    eprintln!(
        "stalled: {connected} kernel sockets connected in {connect_time:?} ({in_cnet} connections \
         in cnet), {written} sent 5 bytes; attack over after {:?}",
        end - start
    );

    let fresh = fresh_echo(&lab);
    std::thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    let rec = honest.join().expect("honest client");
    w.stop.store(true, Ordering::Relaxed);
    let baseline = rec.between(warm, start);
    let (conns, l, c) = stack.with(|s, _| {
        (
            s.tcp_connections(),
            s.tcp_mem_thresholds(),
            s.counters().clone(),
        )
    });
    eprintln!(
        "  drops: tcp_mem_pressure {}, pool_empty {}",
        c.drops(DropReason::TcpMemPressure),
        c.drops(DropReason::PoolEmpty)
    );
    let acks_dropped = dropped_by_filter(&lab);
    let (max_mem, min_free) = (
        w.max_mem.load(Ordering::Relaxed),
        w.min_free.load(Ordering::Relaxed),
    );
    eprintln!(
        "stalled: honest echoes before {baseline} (in {BASELINE:?}) / during {} / after {} (in \
         {AFTER:?}), failures {}, worst round trip during {:?} / after {:?}; a new client's first \
         echo {fresh:?}; max TCP frames {max_mem} (pressure {}, high {}), lowest free frames \
         {min_free}; {conns} connections left, {acks_dropped} kernel ACKs dropped, {} \
         retransmissions, {} pressure episodes, {} shed",
        rec.between(start, end),
        rec.since(end),
        rec.failures.len(),
        rec.worst_since(start),
        rec.worst_since(end),
        l.pressure,
        l.high,
        c.get(Event::TcpRetransSegs),
        c.get(Event::TcpMemPressures),
        c.get(Event::TcpAbortOnMemory),
    );
    drop(socks);
    let report = stack.stop();
    eprintln!("{}{report}", w.report(&rec, start));
    assert!(
        rec.failures.is_empty(),
        "{} honest failures, the first: {:?}",
        rec.failures.len(),
        &rec.failures[..rec.failures.len().min(5)]
    );
    let fresh = fresh.expect("a new client right after the attack is served");
    assert!(fresh < Duration::from_secs(3), "{fresh:?}");
    assert_eq!(connected, n, "every attacker connected");
    assert_eq!(written, n, "every attacker sent its 5 bytes");
    assert!(
        acks_dropped >= n as u64 / 2,
        "the kernel really stopped ACKing"
    );
    assert!(
        c.get(Event::TcpRetransSegs) >= n as u64 / 2,
        "the echoes were left unacknowledged"
    );
    assert!(rec.between(start, end) >= 100, "echoes during the attack");
    // Service, not speed. Each echo's own delay is bounded: none fails with its 5 s timeout
    // (reconnecting counts as a failure), none takes 4 s. (A bound of 500 ms from 2 s after the
    // attack on held in less loaded runs, worst 46-300 ms, but not at a load average of 10 on the 2
    // shared cores, 3.5 s once: each RTO storm of the 16 000 stalled connections, every timer
    // expiring in the same pass, holds the loop for its length, 0.2-0.3 s unloaded.) The count
    // after the attack is only compared with the honest client's own rate before it, in the
    // same run, at 1/8: an absolute count (500 in 5 s) measured the machine's load (126-526 for
    // the same code); the ratio was 0.44-0.76 in loaded runs and 0.23 under a profiler, while
    // a client starved to a few slow echoes a second would be far below it.
    let floor = baseline as f64 * AFTER.as_secs_f64() / BASELINE.as_secs_f64() / 8.0;
    assert!(
        rec.since(end) as f64 >= floor,
        "echoes after the attack: {} in {AFTER:?}, under 1/8 of the rate of the {baseline} in \
         {BASELINE:?} before it",
        rec.since(end)
    );
    assert!(
        rec.worst_since(start) < Duration::from_secs(4),
        "{:?}",
        rec.worst_since(start)
    );
    let settled = rec.worst_since(end + Duration::from_secs(2));
    eprintln!("stalled: worst round trip from 2 s after the attack on: {settled:?}");
    assert!(
        max_mem <= l.high + 64,
        "TCP memory {max_mem} over high {}",
        l.high
    );
    // The reserve held: no output found the pool empty, and between loop passes at least the
    // control reserve (1/32 of the pool) was free.
    assert_eq!(
        c.drops(DropReason::PoolEmpty),
        0,
        "output found the pool empty"
    );
    assert!(
        min_free >= frames as usize / 32,
        "the pool ran down to {min_free} free frames"
    );
    // Outside the stack (driver rings, the runner's batches, the application) there were at
    // most the fill ring's frames and a few bursts (before the fixes: 2 800-2 990 of 4 096,
    // with up to 1 415 waiting on the TX ring).
    let fill = XdpConfig::new(STACK_DEV).rings.fill as usize;
    let outside = w.at_min.lock().unwrap().map_or(0, |c| c.outside);
    assert!(
        outside <= fill + 4 * cnet_stack::BURST,
        "{outside} frames outside the stack at the lowest free count (fill ring {fill})"
    );
}

/// What both raw-socket scripts share: addresses, the checksum, segment building (no options
/// unless given), a raw receive socket `rx` (50 ms timeout) and a bounded-retry `send`.
const PY_PRELUDE: &str = r#"
import errno, random, socket, struct, sys, time
SRC, DST, DPORT = "198.18.0.1", "198.18.0.2", 7
src_b, dst_b = socket.inet_aton(SRC), socket.inet_aton(DST)
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def seg(sport, seq, ack, flags, data=b"", opts=b""):
    while len(opts) % 4:
        opts += b"\x01"
    h = struct.pack("!HHIIBBHHH", sport, DPORT, seq & 0xffffffff, ack & 0xffffffff,
                    (5 + len(opts) // 4) << 4, flags, 65535, 0, 0) + opts
    ph = src_b + dst_b + struct.pack("!BBH", 0, 6, len(h) + len(data))
    c = csum(ph + h + data)
    return h[:16] + struct.pack("!H", c) + h[18:] + data
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
rx.settimeout(0.05)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
def send(pkt):
    # The kernel refuses a raw send for a moment when its queue is full (ENOBUFS): retry, bounded.
    for _ in range(1000):
        try:
            tx.sendto(pkt, (DST, 0))
            return
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            time.sleep(0.0005)
    raise OSError(errno.ENOBUFS, "raw send refused 1000 times")
"#;

/// The out-of-order flooder, run with python3 in the kernel namespace. Arguments: connections,
/// segments per connection, first source port, seed. Completes its own handshakes with raw
/// sockets (no options: MSS 536, no window scaling, so cnet offers a 64 KiB window), then sends
/// every connection's segments of 100 bytes at seeded random offsets in 1..60 000 past RCV.NXT,
/// round-robin; the holes are never filled and it never sends again. Prints
/// `established <k> sent <m>`. Bounded: 20 s for the handshakes.
const FLOODER: &str = r#"
n, per, base, seed = (int(a) for a in sys.argv[1:5])
rng = random.Random(seed)
isn = [rng.getrandbits(32) for _ in range(n)]
peer = {}
deadline = time.monotonic() + 20
while len(peer) < n and time.monotonic() < deadline:
    pending = [i for i in range(n) if i not in peer]
    for i in pending[:128]:
        send(seg(base + i, isn[i], 0, 0x02))
    t = time.monotonic() + 0.5
    while time.monotonic() < t and len(peer) < n:
        try:
            p = rx.recv(2048)
        except socket.timeout:
            continue
        ihl = (p[0] & 15) * 4
        sport, dport, seq, ack, _, fl = struct.unpack("!HHIIBB", p[ihl:ihl + 14])
        i = dport - base
        if p[12:16] != dst_b or sport != DPORT or not 0 <= i < n or i in peer:
            continue
        if fl & 0x12 == 0x12 and ack == (isn[i] + 1) & 0xffffffff:
            peer[i] = (seq + 1) & 0xffffffff
            send(seg(base + i, ack, peer[i], 0x10))
rx.close()
data = bytes([0x5a]) * 100
sent = 0
for _ in range(per):
    for i in sorted(peer):
        off = 1 + rng.randrange(60000)
        send(seg(base + i, (isn[i] + 1 + off) & 0xffffffff, peer[i], 0x10, data))
        sent += 1
print("established", len(peer), "sent", sent, flush=True)
"#;

/// A raw-socket attack under way: the stack, its lab and watch, the honest client (running for
/// 500 ms already) and the attack script (`PY_PRELUDE` + the body) in a temporary file. The
/// caller holds `SERIAL` (taken before, so released after everything here is dropped).
struct RawAttack {
    stack: XdpStack,
    lab: Lab,
    w: Watch,
    stop: Arc<AtomicBool>,
    honest: std::thread::JoinHandle<Record>,
    script: std::path::PathBuf,
}

impl RawAttack {
    /// Sets up the stack and the lab (kernel resets from `ports` dropped), the watch and the
    /// honest client; `None`, with the reason printed, without python3.
    fn start(prefix: &str, frames: u32, ports: (u16, u16), body: &str) -> Option<RawAttack> {
        if std::process::Command::new("python3")
            .arg("-c")
            .arg("import socket")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIP: no python3 (scripts/install-deps.sh)");
            return None;
        }
        let (lab, stack) = setup(prefix, frames);
        // The kernel has no socket for the attacker's connections: its resets would end them.
        drop_from_ports(&lab, ports, 0x04, 0x04);
        let script = std::env::temp_dir().join(format!("cnet-{prefix}-{}.py", lab.kernel_ns));
        std::fs::write(&script, format!("{PY_PRELUDE}{body}")).expect("write the attack script");
        let w = watch(&stack);
        let stop = Arc::new(AtomicBool::new(false));
        let honest = start_honest(&lab, stop.clone());
        std::thread::sleep(Duration::from_millis(500));
        Some(RawAttack {
            stack,
            lab,
            w,
            stop,
            honest,
            script,
        })
    }
}

/// Runs `script` in the kernel namespace with `args` (at most 60 s) and deletes it; its output.
fn run_script(lab: &Lab, script: &std::path::Path, args: &[String]) -> std::process::Output {
    let mut cmd = vec![
        "timeout",
        "60",
        "python3",
        script.to_str().expect("utf-8 path"),
    ];
    cmd.extend(args.iter().map(String::as_str));
    let out = lab.kernel(&cmd);
    let _ = std::fs::remove_file(script);
    out.expect("the attack script ran")
}

fn ooo_flood(frames: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(RawAttack {
        stack,
        lab,
        w,
        stop,
        honest,
        script,
    }) = RawAttack::start("cho", frames, OOO_PORTS, FLOODER)
    else {
        return;
    };
    let before = stack.with(|s, _| s.counters().get(Event::TcpOutOfOrder));

    let (n, per) = (320usize, 300usize);
    let start = Instant::now();
    let args = [n, per, usize::from(OOO_PORTS.0), 12].map(|v| v.to_string());
    let out = run_script(&lab, &script, &args);
    let end = Instant::now();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = out.split_whitespace().collect();
    let (established, sent): (usize, usize) = match words[..] {
        ["established", e, "sent", s] => (e.parse().unwrap(), s.parse().unwrap()),
        _ => panic!("flooder said {out:?}"),
    };
    let held_after = stack.with(|s, _| s.tcp_mem_frames());
    let fresh = fresh_echo(&lab);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let rec = honest.join().expect("honest client");
    w.stop.store(true, Ordering::Relaxed);
    let (held_later, pressure, l, c) = stack.with(|s, _| {
        (
            s.tcp_mem_frames(),
            s.tcp_mem_pressure(),
            s.tcp_mem_thresholds(),
            s.counters().clone(),
        )
    });
    eprintln!(
        "  drops: tcp_mem_pressure {}, pool_empty {}",
        c.drops(DropReason::TcpMemPressure),
        c.drops(DropReason::PoolEmpty)
    );
    let rsts_dropped = dropped_by_filter(&lab);
    let max_mem = w.max_mem.load(Ordering::Relaxed);
    let ooo = c.get(Event::TcpOutOfOrder) - before;
    eprintln!(
        "out-of-order flood: {established} of {n} flows established, {sent} segments sent in \
         {:?}, {ooo} arrived out of order; honest echoes during {} / after {}, failures {}, worst \
         round trip during {:?} / after {:?}; a new client's first echo {fresh:?}; max TCP \
         frames {max_mem} (pressure {}, high {}), {held_after} right after, {held_later} 4 s \
         later; {} pressure episodes, {} pruned, {} queues timed out, {rsts_dropped} kernel \
         resets dropped",
        end - start,
        rec.between(start, end),
        rec.since(end),
        rec.failures.len(),
        rec.worst_since(start),
        rec.worst_since(end),
        l.pressure,
        l.high,
        c.get(Event::TcpMemPressures),
        c.get(Event::TcpOfoPruned),
        c.get(Event::TcpOfoTimeouts),
    );
    assert!(
        rec.failures.is_empty(),
        "{} honest failures, the first: {:?}",
        rec.failures.len(),
        &rec.failures[..rec.failures.len().min(5)]
    );
    let fresh = fresh.expect("a new client right after the flood is served");
    assert!(fresh < Duration::from_secs(3), "{fresh:?}");
    assert_eq!(established, n, "every flooder got in");
    assert_eq!(sent, n * per);
    let refused = c.drops(DropReason::TcpMemPressure);
    // The attack landed: a quarter of its segments reached TCP (on a loaded machine the raw
    // sender and the AF_XDP RX ring drop some before the stack; one of five loaded runs saw
    // under half arrive).
    assert!(
        ooo + refused >= (n * per / 4) as u64,
        "the flood arrived: {ooo} queued out of order, {refused} refused for memory"
    );
    assert!(
        c.get(Event::TcpMemPressures) >= 1,
        "the flood put TCP under pressure"
    );
    assert!(
        max_mem <= l.high + 64,
        "TCP memory {max_mem} over high {}",
        l.high
    );
    assert!(rec.between(start, end) >= 50, "echoes during the flood");
    assert!(rec.since(end) >= 500, "echoes after it");
    let settled = rec.worst_since(end + Duration::from_secs(2));
    eprintln!("out-of-order flood: worst round trip from 2 s after it on: {settled:?}");
    assert!(settled < Duration::from_millis(500), "{settled:?}");
    // Under pressure out-of-order data waits at most a second for its holes. (What TCP still
    // holds 4 s later is printed above, not asserted: see the report of this test's branch.)
    assert!(c.get(Event::TcpOfoTimeouts) >= n as u64 / 2);
    let _ = pressure;
    stack.stop();
}

/// The reneging receiver, run with python3 in the kernel namespace. Arguments: connections,
/// request bytes, first source port. Each connection (raw sockets; SYN with MSS 536 and SACK
/// permitted, 65 535-byte window) sends a request of that many bytes to cnet's echo and takes
/// the echo with a receiver that lies (RFC 2018 section 8): it drops the first echo segment,
/// SACKs every later one and discards it; odd connections SACK blocks that start at the
/// cumulative ACK instead (covering the hole). When the first segment comes again it takes it
/// and ACKs honestly from then on: the cumulative ACK stops at data it SACKed (it reneged), and
/// it keeps and SACKs truthfully what arrives out of order. Once the whole echo arrived it
/// checks it byte for byte and closes. SYNs, requests and FINs are resent every 300 ms while
/// unanswered. Prints `done <k> intact <m> reneged <r> seconds <t>`. Bounded: 30 s.
const RENEGER: &str = r#"
n, size, base = (int(a) for a in sys.argv[1:4])
def sack_opt(blocks):
    if not blocks:
        return b""
    return b"\x01\x01" + struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
        struct.pack("!II", a & 0xffffffff, b & 0xffffffff) for a, b in blocks)
class Conn:
    def __init__(self, i):
        self.port = base + i
        self.isn = (0x1000_0000 * (i + 1) + 12345) & 0xffffffff
        self.req = bytes((i * 7 + k * 13) & 0xff for k in range(size))
        self.at_ack = i % 2 == 1   # SACK blocks starting at the cumulative ACK
        self.irs = None            # cnet's ISN
        self.una = 0               # our data cnet acknowledged
        self.rcv_nxt = 0
        self.got = bytearray()
        self.ooo = {}              # honest phase: seq -> data held out of order
        self.phase = 0             # 0: lying, 1: honest, 2: closing, 3: done
        self.dropped_head = False
        self.sacked = []           # ranges SACKed (and thrown away) while lying
        self.fin_sent = False
        self.fin_acked = False
        self.peer_fin = False
        self.last = 0.0
        self.ok = False
        self.reneged = False
    def blocks(self):
        if self.phase == 0:
            if not self.sacked:
                return []
            if self.at_ack:
                return [(self.rcv_nxt, max(b for _, b in self.sacked))]
            return sorted(self.sacked, reverse=True)[:4]
        return sorted(((s, s + len(d)) for s, d in self.ooo.items()), reverse=True)[:4]
    def ack(self, flags=0x10):
        send(seg(self.port, self.isn + 1 + self.una_sent(), self.rcv_nxt, flags, b"",
                 sack_opt(self.blocks())))
    def una_sent(self):
        return size + (1 if self.fin_sent else 0)
    def kick(self, now):
        if now - self.last < 0.3:
            return
        self.last = now
        if self.irs is None:
            opts = struct.pack("!BBH", 2, 4, 536) + b"\x04\x02"
            send(seg(self.port, self.isn, 0, 0x02, b"", opts))
        elif self.una < size:
            for off in range(self.una, size, 1000):
                send(seg(self.port, self.isn + 1 + off, self.rcv_nxt, 0x18,
                         self.req[off:off + 1000]))
        elif self.phase == 2 and not self.fin_acked:
            self.fin_sent = True
            send(seg(self.port, self.isn + 1 + size, self.rcv_nxt, 0x11))
    def on_segment(self, seq, ack, fl, data):
        if fl & 0x04:
            self.phase = 3
            return
        if self.irs is None:
            if fl & 0x12 == 0x12 and ack == (self.isn + 1) & 0xffffffff:
                self.irs = seq
                self.rcv_nxt = (seq + 1) & 0xffffffff
                self.last = 0.0
                send(seg(self.port, self.isn + 1, self.rcv_nxt, 0x10))
                self.kick(time.monotonic())
            return
        if fl & 0x10:
            acked = (ack - self.isn - 1) & 0xffffffff
            if acked <= size + 1:
                self.una = max(self.una, min(acked, size))
                if acked == size + 1:
                    self.fin_acked = True
        off = (seq - self.rcv_nxt) & 0xffffffff
        if data:
            if self.phase == 0:
                if off == 0 and not self.dropped_head:
                    self.dropped_head = True      # "lost"
                elif off == 0:
                    self.got += data              # the head again: take it, forget the rest
                    self.rcv_nxt = (self.rcv_nxt + len(data)) & 0xffffffff
                    self.reneged = bool(self.sacked)
                    self.sacked = []
                    self.phase = 1
                elif off < 1 << 30:
                    self.sacked.append((seq, (seq + len(data)) & 0xffffffff))
            elif off == 0:
                self.got += data
                self.rcv_nxt = (self.rcv_nxt + len(data)) & 0xffffffff
                while self.rcv_nxt in self.ooo:
                    d = self.ooo.pop(self.rcv_nxt)
                    self.got += d
                    self.rcv_nxt = (self.rcv_nxt + len(d)) & 0xffffffff
            elif off < 1 << 30:
                self.ooo[seq] = data
            if self.phase == 1 and len(self.got) >= size:
                self.ok = bytes(self.got[:size]) == self.req and len(self.got) == size
                self.phase = 2
                self.last = 0.0
        if fl & 0x01 and (seq + len(data)) & 0xffffffff == self.rcv_nxt and self.phase >= 2:
            self.rcv_nxt = (self.rcv_nxt + 1) & 0xffffffff
            self.peer_fin = True
        self.ack()
        if self.phase == 2 and self.fin_acked and self.peer_fin:
            self.phase = 3
conns = [Conn(i) for i in range(n)]
by_port = {c.port: c for c in conns}
start = time.monotonic()
deadline = start + 30
while time.monotonic() < deadline and any(c.phase < 3 for c in conns):
    now = time.monotonic()
    for c in conns:
        if c.phase < 3:
            c.kick(now)
    t = now + 0.05
    while time.monotonic() < t:
        try:
            p = rx.recv(4096)
        except socket.timeout:
            break
        ihl = (p[0] & 15) * 4
        if p[12:16] != dst_b:
            continue
        sport, dport, seq, ack, off, fl = struct.unpack("!HHIIBB", p[ihl:ihl + 14])
        c = by_port.get(dport)
        if sport != DPORT or c is None or c.phase >= 3:
            continue
        tot = struct.unpack("!H", p[2:4])[0]
        c.on_segment(seq, ack, fl, p[ihl + (off >> 4) * 4:tot])
done = sum(1 for c in conns if c.phase == 3 and c.ok)
print("done", done, "intact", sum(1 for c in conns if c.ok), "reneged",
      sum(1 for c in conns if c.reneged), "seconds", round(time.monotonic() - start, 2),
      flush=True)
"#;

/// Source ports of the reneging receivers: 46080..46592 (`0xb400/0xfe00`).
const RENEGE_PORTS: (u16, u16) = (0xb400, 0xfe00);

/// Issue #12, third attack, from Linux's side: 20 receivers that SACK echoed data, discard it
/// and then ACK honestly (half of them with SACK blocks starting at the cumulative ACK), while
/// the honest client keeps echoing. Every reneged connection must complete with its data
/// intact, bounded in time, and the honest client must keep being served.
fn reneging(frames: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(RawAttack {
        stack,
        lab,
        w,
        stop,
        honest,
        script,
    }) = RawAttack::start("chr", frames, RENEGE_PORTS, RENEGER)
    else {
        return;
    };
    let (n, size) = (20usize, 8000usize);
    let start = Instant::now();
    let args = [n, size, usize::from(RENEGE_PORTS.0)].map(|v| v.to_string());
    let out = run_script(&lab, &script, &args);
    let end = Instant::now();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let rec = honest.join().expect("honest client");
    w.stop.store(true, Ordering::Relaxed);
    let c = stack.with(|s, _| s.counters().clone());
    let words: Vec<&str> = text.split_whitespace().collect();
    let (done, intact, reneged, secs): (usize, usize, usize, f64) = match words[..] {
        ["done", d, "intact", i, "reneged", r, "seconds", t] => (
            d.parse().unwrap(),
            i.parse().unwrap(),
            r.parse().unwrap(),
            t.parse().unwrap(),
        ),
        _ => panic!(
            "reneging receiver said {text:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    eprintln!(
        "reneging: {done} of {n} connections done, {intact} echoes intact, {reneged} reneged, in \
         {secs} s; honest echoes during {} / after {}, failures {}, worst round trip {:?}; \
         cnet: {} reneging detected, {} SACK blocks discarded, {} scoreboard resets, {} \
         retransmissions",
        rec.between(start, end),
        rec.since(end),
        rec.failures.len(),
        rec.worst_since(start),
        c.get(Event::TcpSackReneging),
        c.get(Event::TcpSackDiscards),
        c.get(Event::TcpSackScoreboardResets),
        c.get(Event::TcpRetransSegs),
    );
    let report = stack.stop();
    if done < n {
        eprintln!("{}{report}", w.report(&rec, start));
    }
    assert!(
        rec.failures.is_empty(),
        "{} honest failures, the first: {:?}",
        rec.failures.len(),
        &rec.failures[..rec.failures.len().min(5)]
    );
    assert_eq!(intact, n, "every echo came back intact");
    assert_eq!(done, n, "every reneged connection completed and closed");
    assert!(secs < 20.0, "the reneged connections took {secs} s");
    assert!(reneged >= n / 2, "the receivers really reneged: {reneged}");
    assert!(
        c.get(Event::TcpSackReneging) >= 1 && c.get(Event::TcpSackDiscards) >= 1,
        "cnet saw the reneging and the blocks at the cumulative ACK"
    );
    assert!(rec.between(start, end) >= 10, "echoes during the attack");
    assert!(rec.worst_since(start) < Duration::from_secs(2));
}

#[test]
fn kernel_reneging_sack_receivers() {
    require_lab!();
    reneging(4096);
}

#[test]
fn kernel_stalled_connections_8192_frames() {
    require_lab!();
    stalled(8192);
}

#[test]
fn kernel_out_of_order_floods_8192_frames() {
    require_lab!();
    ooo_flood(8192);
}

/// The default pool (4096 frames, 2048 of them lent to the AF_XDP fill ring), as in the issue.
/// It used to run the pool dry: frames waiting on the TX ring for a copy-mode kick, frames
/// lent to the fill ring on top of those still on the RX ring, and TCP segments that took the
/// last free frames (see docs/HARDENING.md).
#[test]
fn kernel_stalled_connections_default_pool() {
    require_lab!();
    stalled(4096);
}

/// See [`kernel_stalled_connections_default_pool`].
#[test]
fn kernel_out_of_order_floods_default_pool() {
    require_lab!();
    ooo_flood(4096);
}
