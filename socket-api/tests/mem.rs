//! The socket API between two runtimes over the in-memory link: UDP and TCP, zero copy and
//! copy, blocking calls from plain threads, misuse, back-pressure, failures. Every test ends by
//! accounting for every frame of both pools.

mod common;

use cnet_socket::{
    ConnectOptions, Error, Poller, Readiness, TcpListener, TcpStream, Token, UdpSocket,
};
use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn udp_echo_zero_copy_both_ways() {
    let p = Pair::new(1024);
    let server = UdpSocket::bind(&p.b, addr(IP_B, 7)).unwrap();
    let t = std::thread::spawn(move || {
        for _ in 0..100 {
            let d = server.recv_from().unwrap();
            // Zero copy in: the payload is read in place. Zero copy out: filled in a lent frame.
            let mut out = server.alloc().unwrap();
            out.put(d.as_slice().expect("not fragmented"));
            server.send_buf_to(out, d.src).unwrap();
        }
        server
    });
    let mut client = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    assert!(client.local_addr().port() >= 49152, "ephemeral port");
    client.set_read_timeout(Some(Duration::from_secs(5)));
    for i in 0..100usize {
        let msg = pattern(1 + i * 13, i as u8);
        client.send_to(&msg, addr(IP_B, 7)).unwrap();
        let d = client.recv_from().unwrap();
        assert_eq!(d.src, addr(IP_B, 7));
        assert_eq!(d.to_vec(), msg);
    }
    drop(t.join().unwrap());
    drop(client);
    p.finish();
}

#[test]
fn udp_answers_from_the_address_it_was_asked_at() {
    let p = Pair::new(1024);
    let ip_b2 = std::net::Ipv4Addr::new(198, 18, 0, 3);
    p.b.with_stack(0, move |s, now| {
        s.apply_config(
            cnet_stack::ConfigEvent::AddrAdd(cnet_stack::IfAddr {
                addr: ip_b2,
                prefix_len: 24,
            }),
            now,
        )
    })
    .unwrap();
    let server = UdpSocket::bind(&p.b, addr(std::net::Ipv4Addr::UNSPECIFIED, 7)).unwrap();
    let mut client = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5)));
    client.send_to(b"which address?", addr(ip_b2, 7)).unwrap();
    let d = server.recv_from().unwrap();
    assert_eq!(d.dst, addr(ip_b2, 7));
    let mut out = server.alloc().unwrap();
    out.put(b"this one");
    server.send_buf_from(out, *d.dst.ip(), d.src).unwrap();
    let back = client.recv_from().unwrap();
    assert_eq!(
        back.src,
        addr(ip_b2, 7),
        "the reply comes from the address asked"
    );
    // A batch, as quinn sends it.
    server
        .try_send_many_from(b"abcdef", 3, Some(ip_b2), d.src)
        .unwrap();
    for want in [&b"abc"[..], b"def"] {
        let r = client.recv_from().unwrap();
        assert_eq!((r.src, r.to_vec()), (addr(ip_b2, 7), want.to_vec()));
    }
    // A socket bound to one address cannot send from another.
    let one = UdpSocket::bind(&p.b, addr(IP_B, 8)).unwrap();
    let b = one.alloc().unwrap();
    assert!(matches!(
        one.try_send_buf_from(b, ip_b2, d.src),
        Err((Error::InvalidInput(_), Some(_)))
    ));
    drop((d, back, server, client, one));
    p.finish();
}

#[test]
fn a_flood_nobody_reads_cannot_stop_the_socket_from_sending() {
    // A QUIC endpoint sends before it reads: if unread datagrams could take the pool, its send
    // would wait for ever for a frame (seen in CI). They stop at the receive floor instead.
    let p = Pair::new(1024);
    let server = std::sync::Arc::new(UdpSocket::bind(&p.b, addr(IP_B, 7)).unwrap());
    let client = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    for i in 0..3000u32 {
        client.send_to(&i.to_be_bytes(), addr(IP_B, 7)).unwrap();
    }
    // Let the whole flood land: every datagram queued or dropped (bounded wait on B's counters).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let landed = || {
        p.b.with_stack(0, |s, _| {
            let c = s.counters();
            let dropped = c.drops(cnet_stack::DropReason::UdpRcvMemory)
                + c.drops(cnet_stack::DropReason::UdpQueueFull);
            (c.get(cnet_stack::Event::UdpDelivered), dropped)
        })
        .unwrap()
    };
    // (A sender may itself drop a few when the link is full: wait until nothing moves.)
    let mut last = (0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = landed();
        if now == last || std::time::Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let (queued, dropped) = landed();
    // (Under load the link or the sender drops some too: more than a pool's worth is enough.)
    assert!(
        queued + dropped > 1024,
        "the flood did not land: {queued} + {dropped}"
    );
    assert!(dropped > 0, "the flood was not bounded");
    let free =
        p.b.with_stack(0, |s, _| (s.pool().available(), s.rx_floor()))
            .unwrap();
    assert!(
        free.0 + 16 >= free.1,
        "unread data went below the receive floor: {free:?}"
    );
    // The socket sends, though it read nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..300u32 {
            srv.send_to(&i.to_be_bytes(), addr(IP_A, 9)).unwrap();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the server's sends waited for frames that unread datagrams held");
    sender.join().unwrap();
    // Reading drains what was kept, then new datagrams flow again.
    let mut got = 0;
    while server.try_recv_from().is_ok() {
        got += 1;
    }
    assert!(got >= 16, "only {got} datagrams were kept");
    // A datagram sent now gets through (sent again every 200 ms while what is left of the flood
    // may still take its place, for at most 10 s).
    client.send_to(b"after", addr(IP_B, 7)).unwrap();
    let mut server = std::sync::Arc::try_unwrap(server).unwrap();
    server.set_read_timeout(Some(Duration::from_millis(200)));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match server.recv_from() {
            Ok(d) if d.to_vec() == b"after" => break,
            Ok(_) => {}
            Err(Error::TimedOut) if std::time::Instant::now() < until => {
                client.send_to(b"after", addr(IP_B, 7)).unwrap();
            }
            Err(e) => {
                let look =
                    p.b.with_stack(0, |s, _| {
                        (
                            s.pool().available(),
                            s.counters().nonzero().collect::<Vec<_>>(),
                        )
                    })
                    .unwrap();
                panic!("datagrams do not flow again after the flood ({e}): {look:?}")
            }
        }
    }
    drop((server, client));
    p.finish();
}

#[test]
fn udp_write_timeout_bounds_a_send_that_finds_no_frame() {
    let p = Pair::new(1024);
    let mut s = UdpSocket::bind(&p.b, addr(IP_B, 11)).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(50)));
    // Hold every frame the queue lends.
    let mut held = Vec::new();
    let mut idle = 0;
    while idle < 20 {
        match s.try_alloc() {
            Ok(b) => {
                held.push(b);
                idle = 0;
                assert!(held.len() < 1024, "lending is bounded");
            }
            Err(_) => {
                // The owner refills the spare queue while the pool is above the writers' floor.
                idle += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let t = std::time::Instant::now();
    assert!(matches!(s.alloc(), Err(Error::TimedOut)));
    assert!(matches!(
        s.send_to(b"x", addr(IP_A, 9)),
        Err(Error::TimedOut)
    ));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(held);
    // Frames back: sends work again.
    s.set_write_timeout(Some(Duration::from_secs(5)));
    s.send_to(b"x", addr(IP_A, 9)).unwrap();
    drop(s);
    p.finish();
}

#[test]
fn udp_large_datagrams_are_fragmented_and_reassembled() {
    let p = Pair::new(1024);
    let server = UdpSocket::bind(&p.b, addr(IP_B, 9)).unwrap();
    let client = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    let msg = pattern(20_000, 3);
    client.send_to(&msg, addr(IP_B, 9)).unwrap();
    let d = server.recv_from().unwrap();
    assert!(d.as_slice().is_none(), "a reassembled datagram is a chain");
    assert_eq!(d.to_vec(), msg);
    let mut small = [0u8; 100];
    client.send_to(&msg[..300], addr(IP_B, 9)).unwrap();
    let (n, src) = server.recv_from_slice(&mut small).unwrap();
    assert_eq!(
        (n, src),
        (100, client.local_addr()),
        "cut to the buffer as recv(2)"
    );
    drop(d);
    drop((server, client));
    p.finish();
}

#[test]
fn udp_connect_send_recv_and_burst() {
    let p = Pair::new(1024);
    let server = UdpSocket::bind(&p.b, addr(IP_B, 5000)).unwrap();
    let client = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    assert_eq!(client.peer_addr(), Err(Error::NotConnected));
    client.connect(addr(IP_B, 5000)).unwrap();
    assert_eq!(
        client
            .send_many(&pattern(1000, 1), 100, addr(IP_B, 5000))
            .unwrap(),
        10
    );
    let mut got = Vec::new();
    while got.len() < 10 {
        let n = server.recv_burst(&mut got, 64).unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(got.iter().all(|d| d.len() == 100));
    let bufs: Vec<_> = got
        .iter()
        .map(|d| {
            let mut b = server.alloc().unwrap();
            b.put(d.as_slice().unwrap());
            (b, d.src)
        })
        .collect();
    assert_eq!(server.send_burst(bufs).unwrap(), 10);
    let mut buf = [0u8; 200];
    for _ in 0..10 {
        assert_eq!(client.recv(&mut buf).unwrap(), 100);
    }
    drop(got);
    drop((server, client));
    p.finish();
}

#[test]
fn udp_double_bind_and_bad_addresses_are_errors() {
    let p = Pair::new(256);
    let s = UdpSocket::bind(&p.a, addr(IP_A, 53)).unwrap();
    assert_eq!(
        UdpSocket::bind(&p.a, addr(IP_A, 53)).unwrap_err(),
        Error::AddrInUse
    );
    assert_eq!(
        UdpSocket::bind(&p.a, addr(IP_B, 53)).unwrap_err(),
        Error::AddrNotAvailable
    );
    assert!(matches!(
        s.connect(addr(IP_B, 0)),
        Err(Error::InvalidInput(_))
    ));
    drop(s);
    // The port is free again once the socket is closed.
    let again = UdpSocket::bind(&p.a, addr(IP_A, 53)).unwrap();
    drop(again);
    p.finish();
}

fn echo_server(l: TcpListener) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut s = l.accept().unwrap();
        let mut total = 0u64;
        // Zero copy in, copy out through Write.
        while let Some(b) = s.recv().unwrap() {
            total += b.len() as u64;
            s.write_all(&b).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        total
    })
}

#[test]
fn tcp_echo_of_4_mib_is_exact() {
    let p = Pair::new(4096);
    let l = TcpListener::bind(&p.b, addr(IP_B, 7)).unwrap();
    let srv = echo_server(l);
    let c = TcpStream::connect(&p.a, addr(IP_B, 7)).unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr(IP_B, 7));
    assert_eq!(c.local_addr().unwrap().ip(), &IP_A);
    let data = pattern(4 << 20, 9);
    let (mut r, mut w) = c.split();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown().unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(srv.join().unwrap(), data.len() as u64);
    assert!(back == data, "echo differs");
    drop(r);
    p.finish();
}

#[test]
fn tcp_zero_copy_send_and_info() {
    let p = Pair::new(1024);
    let l = TcpListener::bind(&p.b, addr(IP_B, 8)).unwrap();
    let c = TcpStream::connect(&p.a, addr(IP_B, 8)).unwrap();
    let mut s = l.accept_timeout(Duration::from_secs(5)).unwrap();
    let mut b = c.alloc().unwrap();
    assert!(b.capacity() >= 536);
    b.put(b"hello, zero copy");
    c.send_buf(b).unwrap();
    let got = s.recv().unwrap().unwrap();
    assert_eq!(&got[..], b"hello, zero copy");
    c.set_nodelay(true).unwrap();
    c.set_congestion(cnet_stack::Congestion::NewReno).unwrap();
    let info = c.info().unwrap();
    assert_eq!(info.state, cnet_stack::TcpState::Established);
    assert_eq!(info.remote, addr(IP_B, 8));
    drop((got, s, c, l));
    p.finish();
}

#[test]
fn tcp_vectored_write_shares_one_segment() {
    let p = Pair::new(1024);
    let l = TcpListener::bind(&p.b, addr(IP_B, 9)).unwrap();
    let mut c = TcpStream::connect(&p.a, addr(IP_B, 9)).unwrap();
    c.set_nodelay(true).unwrap();
    let mut s = l.accept_timeout(Duration::from_secs(5)).unwrap();
    let (head, body, tail) = (pattern(100, 1), pattern(300, 2), pattern(50, 3));
    let bufs = [
        std::io::IoSlice::new(&head),
        std::io::IoSlice::new(&body),
        std::io::IoSlice::new(&[]),
        std::io::IoSlice::new(&tail),
    ];
    assert_eq!(c.write_vectored(&bufs).unwrap(), 450);
    // One frame, one segment: the receiver gets all of it in one buffer, in order.
    let got = s.recv().unwrap().unwrap();
    assert_eq!(got.len(), 450, "the slices left in more than one segment");
    assert_eq!(&got[..100], &head[..]);
    assert_eq!(&got[100..400], &body[..]);
    assert_eq!(&got[400..], &tail[..]);
    // Larger than a segment: split at frame boundaries, nothing lost or reordered.
    let big = [pattern(1000, 4), pattern(3000, 5), pattern(7, 6)];
    let mut sent = 0;
    while sent < 4007 {
        // A write takes what it can; the rest is written again from where it stopped.
        let mut rest = Vec::new();
        let mut skip = sent;
        for b in &big {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            rest.push(std::io::IoSlice::new(&b[skip..]));
            skip = 0;
        }
        sent += c.write_vectored(&rest).unwrap();
    }
    let want: Vec<u8> = big.concat();
    let mut back = Vec::new();
    while back.len() < want.len() {
        back.extend_from_slice(&s.recv().unwrap().unwrap());
    }
    assert!(back == want, "vectored data differs");
    drop((got, s, c, l));
    p.finish();
}

#[test]
fn tcp_connect_refused_and_timeout() {
    let p = Pair::new(256);
    assert_eq!(
        TcpStream::connect(&p.a, addr(IP_B, 9999)).unwrap_err(),
        Error::ConnectionRefused
    );
    // Nobody answers at .9 (a neighbour that does not exist): the timeout ends the wait.
    let o = ConnectOptions {
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let e = TcpStream::connect_with(&p.a, addr(std::net::Ipv4Addr::new(198, 18, 0, 9), 80), o)
        .unwrap_err();
    assert_eq!(e, Error::TimedOut);
    p.finish();
}

#[test]
fn tcp_misuse_is_an_error_not_a_hang() {
    let p = Pair::new(512);
    let l = TcpListener::bind(&p.b, addr(IP_B, 80)).unwrap();
    assert_eq!(
        TcpListener::bind(&p.b, addr(IP_B, 80)).unwrap_err(),
        Error::AddrInUse
    );
    let mut c = TcpStream::connect(&p.a, addr(IP_B, 80)).unwrap();
    let mut s = l.accept().unwrap();
    // Write after shutdown(Write).
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        c.write(b"x").unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
    // The peer sees the end of the stream.
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    // Read after shutdown(Read) is the end of the stream.
    c.shutdown(Shutdown::Read).unwrap();
    assert_eq!(c.read(&mut buf).unwrap(), 0);
    // Abort: the peer's next read is a reset.
    s.write_all(b"late").unwrap();
    c.abort();
    // The stream already ended (FIN), so reads say 0 until the RST lands; then the error.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.take_error().is_none() {
        assert!(std::time::Instant::now() < deadline, "no reset within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(s.take_error(), Some(Error::ConnectionReset));
    let e = s.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    drop((c, s, l));
    p.finish();
}

#[test]
fn held_receive_buffers_back_pressure_then_recover() {
    // A small pool; the reader holds every buffer it gets. The sender must be throttled (the
    // window closes), nothing panics or is lost, and everything flows once buffers are dropped.
    let limits = cnet_socket::Limits {
        stream_rx_bytes: 1 << 20,
        ..Default::default()
    };
    let p = Pair::with_limits(512, limits);
    let l = TcpListener::bind(&p.b, addr(IP_B, 7)).unwrap();
    let c = TcpStream::connect(&p.a, addr(IP_B, 7)).unwrap();
    let mut s = l.accept().unwrap();
    let total = 2 << 20;
    let data = pattern(total, 5);
    let d2 = data.clone();
    let (_r, mut w) = c.split();
    let writer = std::thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown().unwrap();
    });
    let mut held = Vec::new();
    let mut got = 0;
    s.set_read_timeout(Some(Duration::from_millis(500)));
    // Hold buffers until the stack stops delivering (pool pressure), then release them.
    loop {
        match s.recv() {
            Ok(Some(b)) => {
                got += b.len();
                held.push(b);
            }
            Ok(None) => break,
            Err(Error::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got < total, "a 512-frame pool cannot hold 2 MiB");
    let mut back: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    drop(held);
    s.set_read_timeout(Some(Duration::from_secs(10)));
    let resumed = std::time::Instant::now();
    while let Some(b) = s.recv().unwrap() {
        back.extend_from_slice(&b);
    }
    writer.join().unwrap();
    eprintln!(
        "held-buffer recovery: rest of the stream in {:?}",
        resumed.elapsed()
    );
    assert!(back == data, "data lost or reordered under back-pressure");
    drop((s, l, _r));
    p.finish();
}

#[test]
fn poller_reports_only_the_sockets_that_moved() {
    let p = Pair::new(1024);
    let poller = Poller::new();
    let socks: Vec<UdpSocket> = (0..200)
        .map(|i| UdpSocket::bind(&p.b, addr(IP_B, 10_000 + i)).unwrap())
        .collect();
    for (i, s) in socks.iter().enumerate() {
        poller.register(s, Token(i), Readiness::READABLE);
    }
    let mut ev = Vec::with_capacity(64);
    // Sockets are writable, not readable: nothing yet.
    assert_eq!(poller.poll(&mut ev, Some(Duration::from_millis(20))), 0);
    let c = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    c.send_to(b"ping", addr(IP_B, 10_123)).unwrap();
    assert_eq!(poller.poll(&mut ev, Some(Duration::from_secs(5))), 1);
    assert_eq!(ev[0].token, Token(123));
    let d = socks[123].try_recv_from().unwrap();
    assert_eq!(d.to_vec(), b"ping");
    assert_eq!(socks[123].try_recv_from().unwrap_err(), Error::WouldBlock);
    drop((d, c, socks));
    p.finish();
}

#[test]
fn a_runtime_dropped_with_live_sockets_reports_errors() {
    let p = Pair::new(256);
    let u = UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap();
    let l = TcpListener::bind(&p.b, addr(IP_B, 1)).unwrap();
    let c = TcpStream::connect(&p.a, addr(IP_B, 1)).unwrap();
    let waiter = std::thread::spawn(move || u.recv_from().map(|_| ()));
    std::thread::sleep(Duration::from_millis(20));
    let reports = p.a.join();
    assert_eq!(reports[0].frames_lost, 0);
    // The blocked receive is woken with the error; new calls fail the same way.
    assert!(matches!(waiter.join().unwrap(), Err(Error::RuntimeDown(_))));
    assert!(matches!(c.alloc(), Err(Error::RuntimeDown(_))));
    assert!(matches!(
        UdpSocket::bind(&p.a, addr(IP_A, 0)),
        Err(Error::RuntimeDown(_))
    ));
    drop((c, l));
    drop(p.b.join());
}

#[test]
fn a_panicking_stack_thread_fails_every_handle() {
    let p = Pair::new(256);
    let u = UdpSocket::bind(&p.a, addr(IP_A, 4000)).unwrap();
    let r =
        p.a.with_stack(0, |_, _| -> () { panic!("injected failure") });
    assert!(matches!(r, Err(Error::RuntimeDown(_))));
    match u.recv_from() {
        Err(Error::RuntimeDown(why)) => assert!(why.contains("injected failure"), "{why}"),
        other => panic!("expected RuntimeDown, got {other:?}"),
    }
    let st = p.a.status();
    assert!(!st[0].running);
    assert!(st[0]
        .failure
        .as_deref()
        .unwrap_or("")
        .contains("injected failure"));
    let reports = p.a.join();
    assert!(reports[0].failure.is_some());
    drop(u);
    drop(p.b.join());
}

#[test]
fn a_listener_accepts_from_every_queue_and_udp_receives_on_all() {
    // B runs two queues, each on its own link: A (198.18.0.1) on queue 0, C (198.18.0.3) on
    // queue 1. One listener and one UDP socket on B serve both.
    use cnet_drivers::host::Host;
    use cnet_drivers::pipe::pipe;
    use cnet_socket::{Limits, QueueSetup, Runtime};
    const MAC_C: cnet_stack::MacAddr = cnet_stack::MacAddr([0x02, 0xc7, 0, 0, 0, 0x0c]);
    let ip_c = std::net::Ipv4Addr::new(198, 18, 0, 3);
    let (pa, pb0) = pipe(MAC_A, MAC_B, 1500, 256).unwrap();
    let (pc, pb1) = pipe(MAC_C, MAC_B, 1500, 256).unwrap();
    let mut b0 = stack(MAC_B, IP_B, (IP_A, MAC_A), 2, 512);
    let mut b1 = stack(MAC_B, IP_B, (ip_c, MAC_C), 3, 512);
    // Each queue knows both clients (as netlink would tell every queue).
    for s in [&mut b0, &mut b1] {
        for (ip, mac) in [(IP_A, MAC_A), (ip_c, MAC_C)] {
            s.apply_config(
                cnet_stack::ConfigEvent::NeighborSet(cnet_stack::Neighbor {
                    ip,
                    mac,
                    permanent: true,
                }),
                cnet_stack::Instant::ZERO,
            );
        }
    }
    let l = Limits::default();
    let b = Runtime::start(
        vec![
            QueueSetup::new(Host::new(b0, pb0)),
            QueueSetup::new(Host::new(b1, pb1)),
        ],
        l,
    )
    .unwrap();
    let a = Runtime::start(
        vec![QueueSetup::new(Host::new(
            stack(MAC_A, IP_A, (IP_B, MAC_B), 1, 512),
            pa,
        ))],
        l,
    )
    .unwrap();
    let c = Runtime::start(
        vec![QueueSetup::new(Host::new(
            stack(MAC_C, ip_c, (IP_B, MAC_B), 4, 512),
            pc,
        ))],
        l,
    )
    .unwrap();
    assert_eq!(b.queues(), 2);
    let listener = TcpListener::bind(&b, addr(IP_B, 80)).unwrap();
    let udp = UdpSocket::bind(&b, addr(IP_B, 0)).unwrap();
    let _ca = TcpStream::connect(&a, addr(IP_B, 80)).unwrap();
    let _cc = TcpStream::connect(&c, addr(IP_B, 80)).unwrap();
    let s1 = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    let s2 = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    let mut queues = [s1.queue(), s2.queue()];
    queues.sort();
    assert_eq!(queues, [0, 1], "one connection from each queue");
    let mut peers = [*s1.peer_addr().unwrap().ip(), *s2.peer_addr().unwrap().ip()];
    peers.sort();
    assert_eq!(peers, [IP_A, ip_c]);
    let ua = UdpSocket::bind(&a, addr(IP_A, 0)).unwrap();
    let uc = UdpSocket::bind(&c, addr(ip_c, 0)).unwrap();
    ua.send_to(b"from a", udp.local_addr()).unwrap();
    uc.send_to(b"from c", udp.local_addr()).unwrap();
    let mut got = vec![
        udp.recv_from().unwrap().to_vec(),
        udp.recv_from().unwrap().to_vec(),
    ];
    got.sort();
    assert_eq!(got, vec![b"from a".to_vec(), b"from c".to_vec()]);
    drop((s1, s2, listener, udp, ua, uc, _ca, _cc));
    for rt in [&a, &b, &c] {
        for r in rt.join() {
            assert_eq!((r.frames_lost, r.frames_lent, r.failure), (0, 0, None));
        }
    }
}

#[test]
fn connections_never_accepted_are_closed_with_their_listener() {
    let p = Pair::new(512);
    let l = TcpListener::bind(&p.b, addr(IP_B, 81)).unwrap();
    let mut c = TcpStream::connect(&p.a, addr(IP_B, 81)).unwrap();
    // Established, queued in the listener, never accepted: closing the listener closes it.
    std::thread::sleep(Duration::from_millis(50));
    drop(l);
    c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 8];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the end of the stream or a reset, got {other:?}"),
    }
    drop(c);
    p.finish();
}
