//! One UDS session, served as the AF_XDP device plugin's `udsserver` serves it
//! (`shared/afxdp-dp-protocol.md` §5), byte for byte, with optional misbehaviour.
//!
//! Reads are 64 bytes with room for one descriptor (longer requests are cut, as the kernel cuts
//! them for the plugin); every read has the deadline `T` (`udsTimeout`) from its start; read
//! error, deadline or EOF end the session without a reply. The checks of the request loop run in
//! the plugin's order: contains `/xsk_map_fd`, equals `/version`, contains `/config_busy_poll`,
//! equals `/fin`, anything else `/nak`.

use cnet_apps::deviceplugin::{wire, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How the plugin misbehaves (the error paths of the client, served by the same binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Misbehave {
    /// Behave as the spec says.
    None,
    /// The kubelet's PodResources API fails: `/error` then `/host_nak`, close.
    PodResourcesDown,
    /// Read `/connect`, then close without a reply (as for a first message that is not one).
    CloseOnConnect,
    /// Answer `/host_ok`, then close on the next request (a plugin that goes away early).
    CloseAfterHostOk,
    /// Read every request, answer none (until the `udsTimeout`).
    Silent,
    /// Answer `/version` with `0.2`.
    WrongVersion,
    /// Answer `/xsk_map_fd` with bytes that are no reply of the protocol.
    BadReply,
    /// Answer `/connect` with a 320-byte reply.
    LongReply,
    /// `/fd_ack` without a descriptor.
    FdAckWithoutFd,
    /// `/fd_ack` with two descriptors.
    FdAckTwoFds,
    /// `/config_busy_poll_nak`, then close (as when `SO_PREFER_BUSY_POLL` fails).
    BusyPollNak,
}

/// What the session serves.
pub struct Session<'a> {
    /// The pod the kubelet lists (the hostname `/connect` must carry).
    pub pod: &'a str,
    /// The devices the kubelet lists for that pod's container under this resource.
    pub pod_devices: &'a [String],
    /// This server's devices and their XSKMAP.
    pub maps: BTreeMap<String, BorrowedFd<'a>>,
    /// `udsTimeout` (`None`: -1, no timeout).
    pub timeout: Option<Duration>,
    /// The misbehaviour.
    pub misbehave: Misbehave,
    /// Set on SIGTERM / SIGINT: the session ends at once.
    pub stop: &'a AtomicBool,
}

/// How a session ended (printed as `session <outcome>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `/fin` answered.
    Fin,
    /// `/host_nak` sent.
    HostNak,
    /// The first request was not `/connect`: closed without a reply.
    NotConnect,
    /// The client closed the connection.
    Eof,
    /// No request within `udsTimeout`.
    Timeout,
    /// Busy-poll arguments that are no integers: closed without a reply.
    BadBusyPollArgs,
    /// Busy polling could not be configured: `/config_busy_poll_nak`, then closed.
    BusyPollFailed,
    /// Closed on purpose (`--misbehave`).
    Misbehaved,
    /// Stopped by a signal.
    Stopped,
    /// A read or write failed.
    Error(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Fin => f.write_str("fin"),
            Outcome::HostNak => f.write_str("host_nak"),
            Outcome::NotConnect => f.write_str("not-connect"),
            Outcome::Eof => f.write_str("eof"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::BadBusyPollArgs => f.write_str("bad-busy-poll-args"),
            Outcome::BusyPollFailed => f.write_str("busy-poll-failed"),
            Outcome::Misbehaved => f.write_str("misbehaved"),
            Outcome::Stopped => f.write_str("stopped"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One request: its text (the first 64 bytes, lossy UTF-8) and the first descriptor sent with it.
struct Request {
    text: String,
    fd: Option<OwnedFd>,
}

/// Waits until `fd` is readable (`Ok(true)`), the deadline passes (`Ok(false)`) or `stop` is
/// set. What is already readable wins over `stop`, so that a request or EOF that arrived before
/// a SIGTERM is still served and logged.
pub fn wait_readable(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> Result<bool, Outcome> {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let slice = match deadline {
            _ if stopping => Duration::ZERO,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the timeout is at most 100 ms.
        let n = unsafe { libc::poll(&mut p, 1, slice.as_micros().div_ceil(1000) as libc::c_int) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Outcome::Error(format!("poll: {e}")));
            }
        }
        if stopping {
            return Err(Outcome::Stopped);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

impl Session<'_> {
    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }

    /// Reads one request (64 bytes, one descriptor), logging it as `request <text>[ +fd]`.
    fn read(&self, conn: &OwnedFd, emit: &mut dyn FnMut(String)) -> Result<Request, Outcome> {
        if !wait_readable(conn.as_fd(), self.deadline(), self.stop)? {
            return Err(Outcome::Timeout);
        }
        let mut buf = [0u8; 64];
        let m = wire::recv(conn.as_fd(), &mut buf).map_err(|e| Outcome::Error(e.to_string()))?;
        if m.len == 0 && !m.truncated {
            return Err(Outcome::Eof);
        }
        let text = String::from_utf8_lossy(&buf[..m.len.min(buf.len())]).into_owned();
        // Only the first descriptor counts (the plugin's control buffer holds one).
        let fd = m.fds.into_iter().next();
        emit(format!(
            "request {text}{}",
            if fd.is_some() { " +fd" } else { "" }
        ));
        Ok(Request { text, fd })
    }

    /// Serves the one session of `conn` to its end.
    pub fn serve(&self, conn: &OwnedFd, emit: &mut dyn FnMut(String)) -> Outcome {
        match self.serve_inner(conn, emit) {
            Ok(o) | Err(o) => o,
        }
    }

    fn serve_inner(
        &self,
        conn: &OwnedFd,
        emit: &mut dyn FnMut(String),
    ) -> Result<Outcome, Outcome> {
        let first = self.read(conn, emit)?;
        match self.misbehave {
            Misbehave::CloseOnConnect => return Ok(Outcome::Misbehaved),
            Misbehave::Silent => return self.silent(conn, emit),
            Misbehave::LongReply => {
                send(conn, &"/host_ok".repeat(40), &[])?;
                return self.silent(conn, emit);
            }
            _ => {}
        }
        if !first.text.contains("/connect") {
            return Ok(Outcome::NotConnect);
        }
        let words: Vec<&str> = first.text.split(',').collect();
        let mut connected = false;
        if words.len() == 2 && words[0] == "/connect" {
            let host = words[1].replace(' ', "");
            if self.misbehave == Misbehave::PodResourcesDown {
                send(conn, "/error", &[])?;
            } else {
                connected = host == self.pod && self.devices_match();
            }
        }
        if !connected {
            send(conn, "/host_nak", &[])?;
            return Ok(Outcome::HostNak);
        }
        send(conn, "/host_ok", &[])?;
        loop {
            let req = self.read(conn, emit)?;
            if self.misbehave == Misbehave::CloseAfterHostOk {
                return Ok(Outcome::Misbehaved);
            }
            let r = req.text.as_str();
            if r.contains("/xsk_map_fd") {
                self.map_fd(conn, r)?;
            } else if r == "/version" {
                let v = if self.misbehave == Misbehave::WrongVersion {
                    "0.2"
                } else {
                    PROTOCOL_VERSION
                };
                send(conn, v, &[])?;
            } else if r.contains("/config_busy_poll") {
                if let Some(end) = self.busy_poll(conn, r, req.fd, emit)? {
                    return Ok(end);
                }
            } else if r == "/fin" {
                send(conn, "/fin_ack", &[])?;
                return Ok(Outcome::Fin);
            } else {
                send(conn, "/nak", &[])?;
            }
        }
    }

    /// The kubelet's view: the pod's container holds exactly this server's devices.
    fn devices_match(&self) -> bool {
        self.pod_devices.len() == self.maps.len()
            && self.pod_devices.iter().all(|d| self.maps.contains_key(d))
    }

    /// Reads (and logs) requests without answering until the deadline or EOF.
    fn silent(&self, conn: &OwnedFd, emit: &mut dyn FnMut(String)) -> Result<Outcome, Outcome> {
        loop {
            self.read(conn, emit)?;
        }
    }

    /// `/xsk_map_fd,<dev>`: `/fd_ack` + a fresh copy of the map fd, `/fd_nak`, or `/nak`.
    fn map_fd(&self, conn: &OwnedFd, r: &str) -> Result<(), Outcome> {
        let words: Vec<&str> = r.split(',').collect();
        if words.len() != 2 || words[0] != "/xsk_map_fd" {
            return send(conn, "/nak", &[]);
        }
        let Some(map) = self.maps.get(&words[1].replace(' ', "")) else {
            return send(conn, "/fd_nak", &[]);
        };
        let fd = map.as_raw_fd();
        match self.misbehave {
            Misbehave::FdAckWithoutFd => send(conn, "/fd_ack", &[]),
            Misbehave::FdAckTwoFds => send(conn, "/fd_ack", &[fd, fd]),
            Misbehave::BadReply => send_bytes(conn, b"\xff\xfe\x00/fd_ok", &[]),
            _ => send(conn, "/fd_ack", &[fd]),
        }
    }

    /// `/config_busy_poll,<t>,<b>`: `Some(outcome)` when the session ends here.
    fn busy_poll(
        &self,
        conn: &OwnedFd,
        r: &str,
        fd: Option<OwnedFd>,
        emit: &mut dyn FnMut(String),
    ) -> Result<Option<Outcome>, Outcome> {
        // The plugin checks `fd <= 0`, naks, and goes on with the request.
        if fd.is_none() {
            send(conn, "/config_busy_poll_nak", &[])?;
        }
        let words: Vec<&str> = r.split(',').collect();
        if words.len() != 3 || words[0] != "/config_busy_poll" {
            send(conn, "/nak", &[])?;
            return Ok(None);
        }
        // Go's strconv.Atoi (64-bit), then C.int: truncated to 32 bits.
        let int = |s: &str| s.replace(' ', "").parse::<i64>().map(|v| v as i32);
        let (Ok(t), Ok(b)) = (int(words[1]), int(words[2])) else {
            return Ok(Some(Outcome::BadBusyPollArgs));
        };
        if self.misbehave == Misbehave::BusyPollNak {
            send(conn, "/config_busy_poll_nak", &[])?;
            return Ok(Some(Outcome::BusyPollFailed));
        }
        let Some(xsk) = fd else {
            // The plugin calls setsockopt on fd 0 (not a socket here): nak, close.
            emit(format!("busy_poll {t},{b} on fd 0: failed"));
            send(conn, "/config_busy_poll_nak", &[])?;
            return Ok(Some(Outcome::BusyPollFailed));
        };
        match crate::host::configure_busy_poll(xsk.as_fd(), t, b) {
            Err(e) => {
                emit(format!("busy_poll {t},{b} failed: {e}"));
                send(conn, "/config_busy_poll_nak", &[])?;
                Ok(Some(Outcome::BusyPollFailed))
            }
            Ok(applied) => {
                let back = crate::host::read_busy_poll(xsk.as_fd());
                emit(format!(
                    "busy_poll {t},{b} {} read back {back}",
                    if applied { "applied" } else { "rolled-back" }
                ));
                send(conn, "/config_busy_poll_ack", &[])?;
                Ok(None)
            }
        }
    }
}

fn send(conn: &OwnedFd, text: &str, fds: &[std::os::fd::RawFd]) -> Result<(), Outcome> {
    send_bytes(conn, text.as_bytes(), fds)
}

fn send_bytes(conn: &OwnedFd, data: &[u8], fds: &[std::os::fd::RawFd]) -> Result<(), Outcome> {
    wire::send_fds(conn.as_fd(), data, fds).map_err(|e| Outcome::Error(format!("write: {e}")))
}
