//! quinn 0.11 on cnet (feature `quinn`): [`QuinnSocket`] implements quinn's `AsyncUdpSocket` over
//! a [`crate::UdpSocket`], so an unmodified `quinn::Endpoint` runs on cnet:
//!
//! ```ignore
//! let sock = cnet_socket::quinn::QuinnSocket::new(cnet_socket::UdpSocket::bind(&rt, local)?);
//! let ep = quinn::Endpoint::new_with_abstract_socket(
//!     quinn::EndpointConfig::default(), Some(server_config), sock, Arc::new(quinn::TokioRuntime))?;
//! ```
//!
//! Thin on purpose (quinn 0.12 reshapes this trait):
//! - `try_send` hands a transmit's datagrams (`segment_size` batches, up to
//!   [`QuinnSocket::MAX_SEGMENTS`]) to the owner all or nothing
//!   ([`crate::UdpSocket::try_send_many`]); `WouldBlock` leaves nothing half sent.
//! - the poller's `poll_writable` is `Ready` while the socket is writable and otherwise `Pending`
//!   with the waker registered, woken by the owner thread when frames or send credit come back
//!   (quinn calls it before every `try_send`: an always-ready poller would spin).
//! - `poll_recv` copies datagrams into quinn's buffers (quinn owns them); `may_fragment` is false:
//!   quinn-proto never builds a datagram above the socket's largest unfragmented payload.
//! - DF is set on every datagram ([`crate::UdpSocket::set_options`]), so quinn's path MTU
//!   discovery probes are never fragmented.
//! - ECN both ways: a transmit's `ecn` becomes the ECN field of the IPv4 TOS (the socket's
//!   options change, in order with the sends, only when the codepoint does), and a datagram's
//!   received ECN field is reported in `RecvMeta::ecn`.
//! - Addresses on a host with several: a datagram's destination is reported as `dst_ip`, and a
//!   transmit's `src_ip` (quinn answers from the address the peer used) is its source
//!   ([`crate::UdpSocket::try_send_many_from`]).

use crate::{Error, UdpOptions, UdpSocket};
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A cnet UDP socket as quinn's `AsyncUdpSocket`.
#[derive(Debug)]
pub struct QuinnSocket {
    sock: Arc<UdpSocket>,
}

impl QuinnSocket {
    /// Most datagrams of one transmit (quinn's GSO batches).
    pub const MAX_SEGMENTS: usize = 10;

    /// Wraps a bound cnet UDP socket for `quinn::Endpoint::new_with_abstract_socket`, and sets
    /// DF on what it sends.
    pub fn new(sock: UdpSocket) -> Arc<QuinnSocket> {
        let mut o = sock.options();
        o.dont_frag = true;
        // Fails only with the runtime down, which the first send reports.
        let _ = sock.set_options(o);
        Arc::new(QuinnSocket {
            sock: Arc::new(sock),
        })
    }

    /// The cnet socket underneath.
    pub fn get_ref(&self) -> &UdpSocket {
        &self.sock
    }
}

/// Waits for a cnet UDP socket to be writable (quinn's `UdpPoller`).
#[derive(Debug)]
pub struct QuinnPoller {
    sock: Arc<UdpSocket>,
}

impl UdpPoller for QuinnPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.sock.readiness().is_writable() {
            return Poll::Ready(Ok(()));
        }
        self.sock.register_write_waker(cx.waker());
        // The bit may have been set between the check and the registration.
        if self.sock.readiness().is_writable() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

fn v4(a: SocketAddr) -> io::Result<std::net::SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => Ok(std::net::SocketAddrV4::new(ip, a.port())),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cnet UDP is IPv4 only",
            )),
        },
    }
}

impl AsyncUdpSocket for QuinnSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(QuinnPoller {
            sock: self.sock.clone(),
        })
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let dst = v4(t.destination)?;
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let ecn = t.ecn.map_or(0, |e| e as u8);
        let o = self.sock.options();
        if o.tos & 3 != ecn {
            self.sock
                .set_options(UdpOptions {
                    tos: (o.tos & !3) | ecn,
                    ..o
                })
                .map_err(io::Error::from)?;
        }
        // The address quinn answers from: the one the peer's datagrams came to (`dst_ip` below).
        let src = match t.src_ip {
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(std::net::IpAddr::V6(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cnet is IPv4 only: IPv6 source address",
                ))
            }
            None => None,
        };
        match self.sock.try_send_many_from(t.contents, seg, src, dst) {
            Ok(_) => Ok(()),
            Err(Error::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e.into()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n_max = bufs.len().min(meta.len());
        if n_max == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut n = 0;
        while n < n_max {
            let d = if n == 0 {
                match self.sock.poll_recv_from(cx) {
                    Poll::Ready(Ok(d)) => d,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match self.sock.try_recv_from() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            };
            let len = d.copy_to(&mut bufs[n]);
            meta[n] = RecvMeta {
                addr: SocketAddr::V4(d.src),
                len,
                stride: len,
                ecn: EcnCodepoint::from_bits(d.ecn()),
                dst_ip: Some((*d.dst.ip()).into()),
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V4(self.sock.local_addr()))
    }

    fn max_transmit_segments(&self) -> usize {
        Self::MAX_SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
