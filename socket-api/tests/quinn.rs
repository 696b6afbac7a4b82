//! quinn 0.11 unmodified on cnet (feature `quinn`): a `quinn::Endpoint` server and client on
//! tokio, each over a cnet UDP socket of its own runtime, the two joined by the in-memory link.

mod common;

use cnet_socket::quinn::QuinnSocket;
use cnet_socket::{Limits, UdpSocket};
use common::*;
use std::sync::Arc;
use std::time::Duration;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(7919) >> 3) as u8).collect()
}

fn configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut stls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    stls.alpn_protocols = vec![b"echo".to_vec()];
    let server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(stls).unwrap(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut ctls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ctls.alpn_protocols = vec![b"echo".to_vec()];
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(ctls).unwrap(),
    ));
    (server, client)
}

/// Echoes `len` bytes on one stream through quinn endpoints on two cnet runtimes.
fn quinn_echo(limits: Limits, len: usize) {
    let p = Pair::with_limits(4096, limits);
    let (scfg, ccfg) = configs();
    let ssock = QuinnSocket::new(UdpSocket::bind(&p.b, addr(IP_B, 4433)).unwrap());
    let csock = QuinnSocket::new(UdpSocket::bind(&p.a, addr(IP_A, 0)).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = pattern(len);
    let back = rt.block_on(async {
        let tokio_rt = Arc::new(quinn::TokioRuntime);
        let server = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(scfg),
            ssock,
            tokio_rt.clone(),
        )
        .unwrap();
        let mut client = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            csock,
            tokio_rt,
        )
        .unwrap();
        client.set_default_client_config(ccfg);
        let srv = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut s, mut r) = conn.accept_bi().await.unwrap();
            let got = r.read_to_end(64 << 20).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.finish().unwrap();
            conn.closed().await;
            server.wait_idle().await;
        });
        let work = async {
            let conn = client
                .connect(addr(IP_B, 4433).into(), "localhost")
                .unwrap()
                .await
                .unwrap();
            let (mut s, mut r) = conn.open_bi().await.unwrap();
            let (w, back) = tokio::join!(
                async {
                    s.write_all(&data).await.unwrap();
                    s.finish().unwrap();
                },
                r.read_to_end(64 << 20)
            );
            let () = w;
            let back = back.unwrap();
            conn.close(0u32.into(), b"done");
            back
        };
        let back = tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("echo within 60 s");
        client.wait_idle().await;
        tokio::time::timeout(Duration::from_secs(10), srv)
            .await
            .expect("server ends")
            .unwrap();
        back
    });
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echo differs");
    drop(rt);
    p.finish();
}

#[test]
fn unmodified_quinn_echoes_a_stream_over_cnet() {
    quinn_echo(Limits::default(), 4 << 20);
}

#[test]
fn quinn_waits_for_send_credit_instead_of_spinning() {
    // Send credit for only two batches: quinn must wait in poll_writable for the owner.
    let limits = Limits {
        udp_tx_datagrams: 20,
        ..Limits::default()
    };
    quinn_echo(limits, 1 << 20);
}
