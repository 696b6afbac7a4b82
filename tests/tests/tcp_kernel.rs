//! cnet's TCP against the Linux kernel's over veth, on AF_XDP, in network namespaces (root;
//! skipped with a printed reason elsewhere): transfers both ways verified by hash, curl against an
//! HTTP responder on cnet, 10 000 short connections, half-close and reset, the options the
//! handshake negotiates (read back from the capture of cnet's port), and a flood of 1 M SYNs.

use cnet_apps::lab::{Lab, KERNEL_IP, STACK_DEV, STACK_IP};
use cnet_drivers::impair::ImpairConfig;
use cnet_drivers::mem::Impairments;
use cnet_drivers::xdp::XdpConfig;
use cnet_stack::tcp::{TcpOpts, TcpState};
use cnet_tests::require_lab;
use cnet_tests::xdp::{in_kernel, wait_for, XdpStack};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// FNV-1a over a byte stream.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, b: &[u8]) {
        for x in b {
            self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

fn start(lab: &Lab) -> XdpStack {
    XdpStack::start(lab, XdpConfig::new(STACK_DEV))
}

/// Kernel client: writes `n` bytes to cnet's echo port while reading them back; returns
/// (sent hash, received hash, seconds).
fn kernel_echo_transfer(lab: &Lab, n: usize) -> (u64, u64, f64) {
    in_kernel(lab, move || {
        let s = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).expect("connect to cnet");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let t = Instant::now();
        let writer = std::thread::spawn(move || {
            let mut h = Fnv::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0;
            while off < n {
                let k = buf.len().min(n - off);
                for (j, b) in buf[..k].iter_mut().enumerate() {
                    *b = pattern(off + j);
                }
                w.write_all(&buf[..k]).expect("write to cnet");
                h.update(&buf[..k]);
                off += k;
            }
            w.shutdown(Shutdown::Write).unwrap();
            h.0
        });
        let mut r = s;
        let mut h = Fnv::new();
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let k = r.read(&mut buf).expect("read from cnet");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            got += k;
        }
        let sent = writer.join().unwrap();
        assert_eq!(
            got, n,
            "all bytes echoed, then EOF (cnet closed after our half-close)"
        );
        (sent, h.0, t.elapsed().as_secs_f64())
    })
}

#[test]
fn kernel_client_to_cnet_echo_by_hash() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    for n in [1 << 10, 1 << 20, 16 << 20] {
        let (sent, got, secs) = kernel_echo_transfer(&lab, n);
        assert_eq!(sent, got, "{n} bytes echoed intact");
        eprintln!(
            "kernel -> cnet TCP echo: {n} bytes in {secs:.3} s ({:.1} Mbit/s each way)",
            n as f64 * 8.0 / secs / 1e6
        );
    }
    // The echo closed each connection after the client's half-close.
    assert!(wait_for(&stack, Duration::from_secs(5), |s| s.tcp_connections() == 0).is_some());
    stack.stop();
}

/// cnet client -> kernel server on 198.18.0.1:`port`: cnet sends `n` bytes and half-closes; the
/// server answers the hash of what it read. Returns (cnet's hash, the server's hash as seen by
/// the server, the server's hash as cnet received it, seconds).
fn cnet_to_kernel(lab: &Lab, stack: &XdpStack, port: u16, n: usize) -> (u64, u64, u64, f64) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns = cnet_netlink::netns_path(&lab.kernel_ns);
    let server = std::thread::spawn(move || {
        cnet_netlink::enter_netns(&ns).unwrap();
        let l = TcpListener::bind(SocketAddrV4::new(KERNEL_IP, port)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut h = Fnv::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            let k = s.read(&mut buf).expect("read from cnet");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            got += k;
        }
        s.write_all(&h.0.to_be_bytes()).unwrap();
        (got, h.0)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let result = Arc::new(Mutex::new(None::<(u64, u64)>));
    let out = result.clone();
    let mut h = None;
    let mut off = 0usize;
    let mut sent_hash = Fnv::new();
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    stack.spawn_app(move |s, now| {
        let c = *h.get_or_insert_with(|| {
            s.tcp_connect(
                SocketAddrV4::new(KERNEL_IP, port),
                None,
                TcpOpts::default(),
                now,
            )
            .expect("connect")
        });
        match s.tcp_state(c) {
            Some(TcpState::SynSent) => return true,
            None | Some(TcpState::Closed) => {
                *out.lock().unwrap() = Some((0, 0));
                return false;
            }
            _ => {}
        }
        while off < n && s.tcp_can_send(c) > 0 {
            let k = chunk.len().min(n - off);
            for (j, b) in chunk[..k].iter_mut().enumerate() {
                *b = pattern(off + j);
            }
            match s.tcp_send_slice(c, &chunk[..k], now) {
                Ok(0) | Err(_) => break,
                Ok(taken) => {
                    sent_hash.update(&chunk[..taken]);
                    off += taken;
                }
            }
        }
        if off == n && s.tcp_send_queued(c) == 0 {
            s.tcp_shutdown(c, now);
        }
        let mut buf = [0u8; 8];
        let k = s.tcp_recv_slice(c, &mut buf);
        answer.extend_from_slice(&buf[..k]);
        if answer.len() == 8 {
            let theirs = u64::from_be_bytes(answer[..8].try_into().unwrap());
            *out.lock().unwrap() = Some((sent_hash.0, theirs));
            s.tcp_close(c, now);
            return false;
        }
        true
    });
    let t = Instant::now();
    let (got, server_hash) = server.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, n, "the server read everything");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mine, theirs) = loop {
        if let Some(r) = *result.lock().unwrap() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the cnet client never got the answer"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    (mine, server_hash, theirs, secs)
}

#[test]
fn cnet_client_to_kernel_server_by_hash() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    const N: usize = 8 << 20;
    let (mine, server, theirs, secs) = cnet_to_kernel(&lab, &stack, 9000, N);
    assert_eq!(mine, server);
    assert_eq!(theirs, server);
    eprintln!(
        "cnet -> kernel TCP: {N} bytes in {secs:.3} s ({:.1} Mbit/s)",
        N as f64 * 8.0 / secs / 1e6
    );
    stack.stop();
}

#[test]
fn both_ways_over_an_impaired_path_with_a_rate_limit() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    // Seeded impairments around cnet's own AF_XDP port, both directions, and a token bucket on
    // the kernel's side (this kernel has no netem).
    let bad = Impairments {
        loss: 0.02,
        duplicate: 0.01,
        corrupt: 0.005,
        reorder: 0.02,
        reorder_delay: Duration::from_millis(3),
        delay: Duration::from_millis(1),
        jitter: Duration::from_micros(200),
        ..Impairments::default()
    };
    let cfg = ImpairConfig {
        seed: 42,
        tx: bad.clone(),
        rx: bad,
    };
    let stack = XdpStack::start_with(&lab, XdpConfig::new(STACK_DEV), Some(cfg));
    lab.kernel(&[
        "tc", "qdisc", "add", "dev", "kern0", "root", "tbf", "rate", "40mbit",
    ])
    .map(|_| ())
    .or_else(|_| {
        lab.kernel(&[
            "tc", "qdisc", "add", "dev", "kern0", "root", "tbf", "rate", "40mbit", "burst", "32kb",
            "latency", "100ms",
        ])
        .map(|_| ())
    })
    .expect("tc tbf on the kernel side");
    const N: usize = 2 << 20;
    let (sent, got, secs) = kernel_echo_transfer(&lab, N);
    assert_eq!(sent, got, "kernel -> cnet echo intact over the bad path");
    eprintln!("impaired kernel -> cnet echo: {N} bytes in {secs:.2} s");
    let (mine, server, theirs, secs) = cnet_to_kernel(&lab, &stack, 9001, N);
    assert_eq!(
        (mine, theirs),
        (server, server),
        "cnet -> kernel intact over the bad path"
    );
    eprintln!("impaired cnet -> kernel: {N} bytes in {secs:.2} s");
    let counters = stack.with(|s, _| s.counters().nonzero().collect::<Vec<_>>());
    let retrans = counters
        .iter()
        .find(|(k, _)| k.contains("retrans"))
        .map_or(0, |(_, v)| *v);
    eprintln!("cnet counters: {counters:?}");
    assert!(retrans > 0, "losses were repaired by retransmission");
    stack.stop();
}

#[test]
fn curl_fetches_from_an_http_responder_on_cnet() {
    require_lab!();
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: no curl (scripts/install-deps.sh installs it)");
        return;
    }
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    const BODY: usize = 300_000;
    let l = stack.with(|s, _| {
        s.tcp_listen("0.0.0.0:80".parse().unwrap(), 16, TcpOpts::default())
            .unwrap()
    });
    // One connection at a time: read the request head, answer, close.
    let mut conn = None;
    let mut req = Vec::new();
    let mut sent = 0usize;
    let mut head_sent = false;
    stack.spawn_app(move |s, now| {
        if conn.is_none() {
            conn = s.tcp_accept(l);
            req.clear();
            sent = 0;
            head_sent = false;
        }
        let Some(c) = conn else { return true };
        let mut buf = [0u8; 2048];
        let k = s.tcp_recv_slice(c, &mut buf);
        req.extend_from_slice(&buf[..k]);
        if !req.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
        if !head_sent {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
            );
            if s.tcp_send_slice(c, head.as_bytes(), now) != Ok(head.len()) {
                return true;
            }
            head_sent = true;
        }
        let mut chunk = [0u8; 8192];
        while sent < BODY {
            let k = chunk.len().min(BODY - sent);
            for (j, b) in chunk[..k].iter_mut().enumerate() {
                *b = pattern(sent + j);
            }
            match s.tcp_send_slice(c, &chunk[..k], now) {
                Ok(0) | Err(_) => return true,
                Ok(n) => sent += n,
            }
        }
        s.tcp_close(c, now);
        conn = None;
        true
    });
    let path = std::env::temp_dir().join(format!("cnet-curl-{}.bin", lab.stack_ns));
    let out = lab
        .kernel(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            path.to_str().unwrap(),
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://{STACK_IP}/file"),
        ])
        .expect("curl ran");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let body = std::fs::read(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert_eq!(report, format!("200 {BODY}"));
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "body intact"
    );
    stack.stop();
}

#[test]
fn ten_thousand_short_connections() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    const N: usize = 10_000;
    let (done, secs) = in_kernel(&lab, || {
        let t = Instant::now();
        let mut done = 0;
        for i in 0..N {
            if t.elapsed() > Duration::from_secs(120) {
                break;
            }
            let mut s = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let msg = (i as u64).to_be_bytes();
            s.write_all(&msg).unwrap();
            let mut back = [0u8; 8];
            s.read_exact(&mut back).expect("echo");
            assert_eq!(back, msg);
            done += 1;
        }
        (done, t.elapsed().as_secs_f64())
    });
    assert_eq!(done, N, "every connection echoed");
    eprintln!(
        "{N} short connections in {secs:.2} s ({:.0}/s)",
        N as f64 / secs
    );
    assert!(
        wait_for(&stack, Duration::from_secs(10), |s| s.tcp_connections()
            < 100)
        .is_some(),
        "connections are released"
    );
    stack.stop();
}

#[test]
fn half_close_and_reset_from_the_kernel() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    // Half-close: the client stops writing; everything still comes back, then EOF.
    let echoed = in_kernel(&lab, || {
        let mut s = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let data = vec![0x5au8; 100_000];
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        back == data
    });
    assert!(echoed);
    // Reset: close with SO_LINGER 0 while cnet holds the connection.
    let before = stack.with(|s, _| s.tcp_connections());
    in_kernel(&lab, || {
        let s = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt with a valid fd and a correctly sized linger struct.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        drop(s);
    });
    let gone = wait_for(&stack, Duration::from_secs(3), move |s| {
        s.tcp_connections() <= before
    });
    assert!(gone.is_some(), "the reset connection is gone");
    stack.stop();
}

#[test]
fn handshake_negotiates_mss_wscale_timestamps_and_sack() {
    require_lab!();
    if std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("SKIP: no tshark (scripts/install-deps.sh installs it)");
        return;
    }
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    let (a, b, _) = kernel_echo_transfer(&lab, 4096);
    assert_eq!(a, b);
    let (_, capture) = stack.stop_keep_capture();
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            capture.to_str().unwrap(),
            "-Y",
            "tcp.flags.syn == 1",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "tcp.flags.ack",
            "-e",
            "tcp.options.mss_val",
            "-e",
            "tcp.options.wscale.shift",
        ])
        .args([
            "-e",
            "tcp.options.sack_perm",
            "-e",
            "tcp.options.timestamp.tsval",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let keep = capture.clone();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let syn_ack = lines
        .iter()
        .find(|f| f[0] == "1" || f[0] == "True")
        .unwrap_or_else(|| panic!("no SYN-ACK in {}: {text}", keep.display()));
    assert_eq!(syn_ack[1], "1460", "cnet's MSS for a 1500-byte MTU: {text}");
    assert!(!syn_ack[2].is_empty(), "cnet offers window scaling: {text}");
    assert!(!syn_ack[3].is_empty(), "cnet offers SACK: {text}");
    assert!(!syn_ack[4].is_empty(), "cnet sends timestamps: {text}");
    eprintln!("SYN / SYN-ACK options (ack, mss, wscale, sack_perm, tsval):\n{text}");
    let _ = std::fs::remove_file(capture);
}

/// Sends `count` SYNs to `dst_mac`/`STACK_IP:7` from random sources in 198.19.0.0/16 through a
/// raw AF_PACKET socket on the kernel's veth end (runs inside the kernel namespace).
fn syn_flood(dst_mac: [u8; 6], count: usize, seed: u64) -> usize {
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new("kern0").unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0);
    // SAFETY: an all-zero sockaddr_ll is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a properly sized, initialised sockaddr_ll.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let csum = |data: &[u8], init: u32| -> u16 {
        let mut s = init;
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    let mut frame = [0u8; 14 + 20 + 24];
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&[0x02, 0x66, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut x = seed | 1;
    let mut sent = 0;
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = [198, 19, (x >> 8) as u8, (x >> 16) as u8];
        let ip = &mut frame[14..34];
        ip.copy_from_slice(
            &[0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0]
                .iter()
                .chain(&src)
                .chain(&STACK_IP.octets())
                .copied()
                .collect::<Vec<u8>>(),
        );
        let c = csum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let tcp = &mut frame[34..58];
        tcp.fill(0);
        tcp[0..2].copy_from_slice(&((x >> 24) as u16 | 1024).to_be_bytes());
        tcp[2..4].copy_from_slice(&7u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&((x >> 32) as u32).to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = 0x02;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        let mut pseudo = 0u32;
        for w in [&src[..], &STACK_IP.octets()[..]] {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
            pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        pseudo += 6 + 24;
        let c = csum(tcp, pseudo);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        // A loaded machine may refuse a send for a moment (ENOBUFS): retry, bounded.
        for _ in 0..1000 {
            // SAFETY: `frame` is a valid buffer of its length; `fd` is bound.
            let n = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
            if n == frame.len() as isize {
                sent += 1;
                break;
            }
            std::thread::yield_now();
        }
    }
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    sent
}

#[test]
fn a_million_syns_keep_memory_bounded_and_a_real_client_gets_in() {
    require_lab!();
    let lab = Lab::new("cxt", 1).unwrap();
    let stack = start(&lab);
    // SYN-ACKs to the flood's sources go towards the kernel (which drops them): cookies are sent.
    lab.ip_stack(&[
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        &KERNEL_IP.to_string(),
    ])
    .unwrap();
    let mac = stack.with(|s, _| s.mac().0);
    let ns = cnet_netlink::netns_path(&lab.kernel_ns);
    let flood = std::thread::spawn(move || {
        cnet_netlink::enter_netns(&ns).unwrap();
        let t = Instant::now();
        let sent = syn_flood(mac, 1_000_000, 0x5eed);
        (sent, t.elapsed())
    });
    // A legitimate client during the flood.
    std::thread::sleep(Duration::from_millis(200));
    let ok = in_kernel(&lab, || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let addr = SocketAddrV4::new(STACK_IP, 7).into();
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"legit").unwrap();
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() && &b == b"legit" {
                    return true;
                }
            }
        }
        false
    });
    let (sent, took) = flood.join().unwrap();
    let (conns, held, cap, cookies) = stack.with(|s, _| {
        (
            s.tcp_connections(),
            s.frames_held(),
            s.pool().capacity(),
            s.counters().get(cnet_stack::Event::TcpSynCookiesSent),
        )
    });
    eprintln!(
        "SYN flood: {sent} SYNs in {took:?}; afterwards {conns} connections, {held}/{cap} frames held, {cookies} cookies sent"
    );
    assert!(ok, "a real client connected and echoed during the flood");
    assert_eq!(sent, 1_000_000);
    assert!(cookies > 0, "the SYN queue overflowed into cookies");
    assert!(conns <= 1100, "connection state stays bounded: {conns}");
    assert!(held < cap / 2, "frames held stay bounded: {held} of {cap}");
    stack.stop();
}
