//! Typed errors of the socket API, each mapping to a `std::io::ErrorKind`.

use std::io;

/// What a socket call can fail with. `From<Error> for io::Error` keeps the kind, so the blocking
/// types' `Read`/`Write` and the tokio adapter report the same errors as kernel sockets would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing to do now (non-blocking call): retry when the socket is ready.
    #[error("operation would block")]
    WouldBlock,
    /// A blocking call's deadline passed (connect timeout, read/write timeout).
    #[error("timed out")]
    TimedOut,
    /// The address is in use (bind, listen, connect's 4-tuple).
    #[error("address in use")]
    AddrInUse,
    /// The local address is not one of the stack's.
    #[error("address not available")]
    AddrNotAvailable,
    /// A bad argument: unspecified or broadcast peer, port 0, empty buffer where data is needed.
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
    /// The peer refused the connection (RST to our SYN).
    #[error("connection refused")]
    ConnectionRefused,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    ConnectionReset,
    /// The connection was aborted here (abort, or the stack gave up on it).
    #[error("connection aborted")]
    ConnectionAborted,
    /// No route to the destination, or an ICMP unreachable report.
    #[error("host unreachable")]
    HostUnreachable,
    /// The socket is not connected (send without a peer, read before connect).
    #[error("not connected")]
    NotConnected,
    /// Writing after `shutdown(Write)` or after the connection closed for sending.
    #[error("broken pipe")]
    BrokenPipe,
    /// The socket was closed by this process; the handle is no longer usable.
    #[error("socket closed")]
    Closed,
    /// The datagram or buffer is larger than the path or the frame can carry.
    #[error("message too large")]
    MessageTooLarge,
    /// A resource ran out: frames of the pool, connections, ephemeral ports.
    #[error("out of resources: {0}")]
    NoResources(&'static str),
    /// The queue thread that owns this socket stopped (runtime stopped, or it failed: the
    /// message says why). Every handle of that queue reports it; no call hangs.
    #[error("runtime down: {0}")]
    RuntimeDown(String),
}

impl Error {
    /// The `std::io::ErrorKind` this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::WouldBlock => K::WouldBlock,
            Error::TimedOut => K::TimedOut,
            Error::AddrInUse => K::AddrInUse,
            Error::AddrNotAvailable => K::AddrNotAvailable,
            Error::InvalidInput(_) => K::InvalidInput,
            Error::ConnectionRefused => K::ConnectionRefused,
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionAborted => K::ConnectionAborted,
            Error::HostUnreachable => K::HostUnreachable,
            Error::NotConnected => K::NotConnected,
            Error::BrokenPipe => K::BrokenPipe,
            Error::Closed => K::NotConnected,
            Error::MessageTooLarge => K::InvalidInput,
            Error::NoResources(_) => K::OutOfMemory,
            Error::RuntimeDown(_) => K::BrokenPipe,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

impl From<cnet_stack::BindError> for Error {
    fn from(e: cnet_stack::BindError) -> Error {
        match e {
            cnet_stack::BindError::AddrInUse => Error::AddrInUse,
            cnet_stack::BindError::AddrNotAvailable => Error::AddrNotAvailable,
            cnet_stack::BindError::NoPortLeft => Error::NoResources("ephemeral ports"),
        }
    }
}

impl From<cnet_stack::ConnectError> for Error {
    fn from(e: cnet_stack::ConnectError) -> Error {
        use cnet_stack::ConnectError as C;
        match e {
            C::InvalidAddress => Error::InvalidInput("invalid remote address"),
            C::NoRoute | C::NoAddress => Error::HostUnreachable,
            C::AddrInUse => Error::AddrInUse,
            C::NoPortLeft => Error::NoResources("ephemeral ports"),
            C::TooManyConnections => Error::NoResources("connections"),
            C::PoolEmpty => Error::NoResources("frames"),
        }
    }
}

impl From<cnet_stack::TcpError> for Error {
    fn from(e: cnet_stack::TcpError) -> Error {
        use cnet_stack::TcpError as T;
        match e {
            T::Refused => Error::ConnectionRefused,
            T::Reset => Error::ConnectionReset,
            T::TimedOut => Error::TimedOut,
            T::Unreachable(_) => Error::HostUnreachable,
            T::Aborted => Error::ConnectionAborted,
        }
    }
}

/// Result of a socket call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_io_kind() {
        let e: io::Error = Error::ConnectionReset.into();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e: io::Error = Error::RuntimeDown("queue 0 panicked".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.to_string().contains("queue 0 panicked"));
        assert_eq!(
            Error::from(cnet_stack::BindError::AddrInUse).kind(),
            io::ErrorKind::AddrInUse
        );
    }
}
