//! The tokio adapter: cnet sockets as tokio I/O types, on current-thread and multi-thread
//! runtimes alike. Wake-ups come from the owner threads through the sockets' wakers; no tokio
//! reactor is involved, so these types need no `tokio::net` driver.
//!
//! [`TcpStream`] implements `AsyncRead`/`AsyncWrite` (so `tokio::io::copy`, tokio-util codecs
//! and hyper through hyper-util's `TokioIo` work), [`TcpListener`] accepts, [`UdpSocket`] sends
//! and receives datagrams. Connect and bind run one control call on the owner thread, which the
//! calling task waits for (microseconds).

use crate::{ConnectOptions, Datagram, Runtime};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An async TCP connection.
#[derive(Debug)]
pub struct TcpStream(crate::TcpStream);

impl TcpStream {
    /// Connects to `remote`.
    pub async fn connect(rt: &Runtime, remote: SocketAddrV4) -> io::Result<TcpStream> {
        Self::connect_with(rt, remote, ConnectOptions::default()).await
    }

    /// Connects with options; `o.timeout` bounds the wait.
    pub async fn connect_with(
        rt: &Runtime,
        remote: SocketAddrV4,
        o: ConnectOptions,
    ) -> io::Result<TcpStream> {
        let s = crate::TcpStream::start_connect(rt, remote, o)?;
        let wait = poll_fn(|cx| s.poll_connected(cx));
        let r = match o.timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => Err(crate::Error::TimedOut),
            },
            None => wait.await,
        };
        match r {
            Ok(()) => Ok(TcpStream(s)),
            Err(e) => {
                s.abort();
                Err(e.into())
            }
        }
    }

    /// The blocking/zero-copy stream underneath.
    pub fn get_ref(&self) -> &crate::TcpStream {
        &self.0
    }

    /// Local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.0.local_addr()?)
    }

    /// Remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        Ok(self.0.peer_addr()?)
    }

    /// Disables or enables Nagle's algorithm (`TCP_NODELAY`). Request/response protocols want it
    /// off: with Nagle on, a response's last small segment waits for the peer's delayed ACK.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        Ok(self.0.set_nodelay(on)?)
    }

    /// Receives the next buffer in place (zero copy); `None` at the end of the stream.
    pub async fn recv(&mut self) -> io::Result<Option<crate::RecvBuf>> {
        Ok(poll_fn(|cx| self.0.poll_recv(cx)).await?)
    }

    /// Splits into a reader and a writer that can move to different tasks.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let (r, w) = self.0.split();
        (OwnedReadHalf(r), OwnedWriteHalf(w))
    }
}

impl From<crate::TcpStream> for TcpStream {
    fn from(s: crate::TcpStream) -> TcpStream {
        TcpStream(s)
    }
}

fn read_into(
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    f: impl FnOnce(&mut Context<'_>, &mut [u8]) -> Poll<crate::Result<usize>>,
) -> Poll<io::Result<()>> {
    let dst = buf.initialize_unfilled();
    match f(cx, dst) {
        Poll::Ready(Ok(n)) => {
            buf.advance(n);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
    }
}

/// The reading half of an async stream.
#[derive(Debug)]
pub struct OwnedReadHalf(crate::ReadHalf);

/// The writing half of an async stream.
#[derive(Debug)]
pub struct OwnedWriteHalf(crate::WriteHalf);

/// `AsyncRead` through a `poll_read_slice(cx, buf)` method.
macro_rules! async_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let me = self.get_mut();
                read_into(cx, buf, |cx, b| me.0.poll_read_slice(cx, b))
            }
        }
    };
}

/// `AsyncWrite` through `poll_write_slice(cx, data)`, `poll_write_vectored(cx, bufs)` (slices
/// packed into shared frames: hyper writes a response's head and body as one vectored write) and a
/// `shutdown` of the sending side
/// (`$shut`); nothing to flush: data is with the owner thread once taken.
macro_rules! async_write {
    ($t:ty, $shut:expr) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_write_slice(cx, buf).map_err(Into::into)
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_write_vectored(cx, bufs).map_err(Into::into)
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let shut: fn(&Self) -> crate::Result<()> = $shut;
                Poll::Ready(shut(&self).map_err(Into::into))
            }
        }
    };
}

async_read!(TcpStream);
async_write!(TcpStream, |s| s.0.shutdown(crate::Shutdown::Write));
async_read!(OwnedReadHalf);
async_write!(OwnedWriteHalf, |s| s.0.shutdown());

/// An async listener.
#[derive(Debug)]
pub struct TcpListener(crate::TcpListener);

impl TcpListener {
    /// Listens on `local` on every queue.
    pub async fn bind(rt: &Runtime, local: SocketAddrV4) -> io::Result<TcpListener> {
        Ok(TcpListener(crate::TcpListener::bind(rt, local)?))
    }

    /// Listens with a backlog and options that accepted connections inherit (e.g.
    /// `TcpOpts { nodelay: true, .. }`).
    pub async fn bind_with(
        rt: &Runtime,
        local: SocketAddrV4,
        backlog: u32,
        opts: cnet_stack::TcpOpts,
    ) -> io::Result<TcpListener> {
        Ok(TcpListener(crate::TcpListener::bind_with(
            rt, local, backlog, opts,
        )?))
    }

    /// Wraps a blocking listener.
    pub fn from_std(l: crate::TcpListener) -> TcpListener {
        TcpListener(l)
    }

    /// Waits for a connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        let s = poll_fn(|cx| self.0.poll_accept(cx)).await?;
        let peer = s.peer_addr()?;
        Ok((TcpStream(s), peer))
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.0.local_addr()
    }
}

/// An async UDP socket.
#[derive(Debug)]
pub struct UdpSocket(crate::UdpSocket);

impl UdpSocket {
    /// Binds `local` on every queue.
    pub async fn bind(rt: &Runtime, local: SocketAddrV4) -> io::Result<UdpSocket> {
        Ok(UdpSocket(crate::UdpSocket::bind(rt, local)?))
    }

    /// The socket underneath (zero-copy calls, readiness).
    pub fn get_ref(&self) -> &crate::UdpSocket {
        &self.0
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.0.local_addr()
    }

    /// Sends `data` to `dst`.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddrV4) -> io::Result<usize> {
        Ok(poll_fn(|cx| self.0.poll_send_to(cx, data, dst)).await?)
    }

    /// Receives a datagram in place (zero copy).
    pub async fn recv(&self) -> io::Result<Datagram> {
        Ok(poll_fn(|cx| self.0.poll_recv_from(cx)).await?)
    }

    /// Receives a datagram into `buf` (copy); cut to `buf`'s length as `recv(2)` does.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        let d = self.recv().await?;
        Ok((d.copy_to(buf), d.src))
    }

    /// Waits until a receive would not block.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| {
            if self.0.readiness().is_readable() {
                return Poll::Ready(Ok(()));
            }
            self.0.register_read_waker(cx.waker());
            if self.0.readiness().is_readable() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until a send would not block.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| {
            if self.0.readiness().is_writable() {
                return Poll::Ready(Ok(()));
            }
            self.0.register_write_waker(cx.waker());
            if self.0.readiness().is_writable() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
