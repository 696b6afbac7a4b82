//! QUIC (issue #15) in memory: `cnet_apps::quic`'s echo server and client, each on its own cnet
//! runtime, the two joined by the thread-safe in-memory link (optionally impaired around the
//! server's port). 10 MB over 8 streams, each echo checked by SHA-256.

use cnet_apps::quic::{self, ClientOptions, ClientReport, QuicError};
use cnet_drivers::host::Host;
use cnet_drivers::impair::{ImpairConfig, ImpairPort};
use cnet_drivers::mem::Impairments;
use cnet_drivers::pipe::pipe;
use cnet_drivers::Port;
use cnet_socket::{Limits, QueueSetup, Runtime};
use cnet_stack::{ConfigEvent, Instant, MacAddr, Neighbor};
use cnet_tests::{stack, IP_A, IP_B, MAC_A, MAC_B};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn runtime<P: Port + Send + 'static>(
    mac: MacAddr,
    ip: Ipv4Addr,
    peer: (Ipv4Addr, MacAddr),
    seed: u64,
    port: P,
) -> Runtime {
    let mut s = stack(mac, ip, seed, 8192);
    s.apply_config(
        ConfigEvent::NeighborSet(Neighbor {
            ip: peer.0,
            mac: peer.1,
            permanent: true,
        }),
        Instant::ZERO,
    );
    Runtime::start(vec![QueueSetup::new(Host::new(s, port))], Limits::default())
        .expect("runtime starts")
}

/// Runs the echo server on B (its port wrapped in `impair` when given) and the client on A.
fn echo_run(
    streams: usize,
    bytes: u64,
    impair: Option<ImpairConfig>,
) -> Result<ClientReport, QuicError> {
    echo_run_with(streams, bytes, impair, false)
}

/// [`echo_run`], with garbage and truncated Initial packets thrown at the server first when
/// `garbage` is set.
fn echo_run_with(
    streams: usize,
    bytes: u64,
    impair: Option<ImpairConfig>,
    garbage: bool,
) -> Result<ClientReport, QuicError> {
    let (pa, pb) = pipe(MAC_A, MAC_B, 1500, 4096).expect("pipe");
    let a = runtime(MAC_A, IP_A, (IP_B, MAC_B), 1, pa);
    let b = match impair {
        Some(cfg) => runtime(
            MAC_B,
            IP_B,
            (IP_A, MAC_A),
            2,
            ImpairPort::new(pb, cfg).expect("valid impairments"),
        ),
        None => runtime(MAC_B, IP_B, (IP_A, MAC_A), 2, pb),
    };
    let (cert, key) = quic::self_signed().expect("self-signed certificate");
    let server_io = quic::cnet_io(&b, SocketAddrV4::new(IP_B, 4433)).expect("server bind");
    let cfg = quic::server_config(vec![cert.clone()], key, 1472).expect("server config");
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || quic::serve_echo(server_io, cfg, false, &st));
    if garbage {
        let g = cnet_socket::UdpSocket::bind(&a, SocketAddrV4::new(IP_A, 0)).expect("bind");
        let dst = SocketAddrV4::new(IP_B, 4433);
        for i in 0..200usize {
            let mut d: Vec<u8> = (0..1 + i * 7).map(|k| (k * 13 + i) as u8).collect();
            if i % 2 == 0 {
                // A long-header Initial of QUIC v1, cut short.
                d.splice(0..0, [0xc0, 0, 0, 0, 1, 8]);
                d.truncate(6 + i % 40);
            }
            g.send_to(&d, dst).expect("send garbage");
        }
    }
    let client_io = quic::cnet_io(&a, SocketAddrV4::new(IP_A, 0)).expect("client bind");
    let r = quic::run_client(
        client_io,
        ClientOptions {
            server: SocketAddrV4::new(IP_B, 4433).into(),
            server_name: "localhost".into(),
            alpn: b"echo".to_vec(),
            streams,
            bytes,
            timeout: Duration::from_secs(120),
            trust: Some(cert),
        },
    );
    stop.store(true, Ordering::Relaxed);
    let sum = server.join().expect("server thread").expect("server ran");
    assert!(sum.connections >= 1, "the server accepted the connection");
    for rt in [&a, &b] {
        for q in rt.join() {
            assert_eq!(q.failure, None, "runtime failed");
        }
    }
    if let Ok(r) = &r {
        eprintln!(
            "{} streams x {} B: handshake {:?}, goodput {:.1} Mbit/s, lost {} packets, rtt {:?}",
            r.streams,
            bytes,
            r.handshake,
            r.goodput_mbps(),
            r.stats.path.lost_packets,
            r.stats.path.rtt
        );
    }
    r
}

#[test]
fn ten_megabytes_over_eight_streams_checked_by_hash() {
    let r = echo_run(8, 10_000_000 / 8, None).expect("echo run");
    assert_eq!(r.streams, 8);
    assert_eq!(r.bytes, 10_000_000);
    assert_eq!(r.alpn.as_deref(), Some(&b"echo"[..]));
}

#[test]
fn ten_megabytes_with_loss_and_corruption_around_the_server() {
    let imp = Impairments {
        loss: 0.01,
        corrupt: 0.005,
        ..Default::default()
    };
    let cfg = ImpairConfig {
        seed: 7,
        tx: imp.clone(),
        rx: imp,
    };
    let r = echo_run(8, 10_000_000 / 8, Some(cfg)).expect("echo run");
    assert_eq!(r.streams, 8);
    assert!(
        r.stats.path.lost_packets > 0,
        "the impairments did bite: {:?}",
        r.stats.path
    );
}

#[test]
fn many_small_streams() {
    let r = echo_run(1000, 32, None).expect("echo run");
    assert_eq!(r.streams, 1000);
}

#[test]
fn garbage_and_truncated_initials_do_not_stop_the_server() {
    let r = echo_run_with(2, 100_000, None, true).expect("echo run after garbage");
    assert_eq!(r.streams, 2);
}
