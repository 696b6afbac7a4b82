//! The `dp_handshake` target: the pod-side AF_XDP device-plugin client
//! (`cnet_apps::deviceplugin::DpSession`) fed with plugin replies.
//!
//! The replies are queued in advance on the plugin's end of a SOCK_SEQPACKET `socketpair`, each
//! one datagram with 0, 1, 2 or 4 descriptors attached (`/dev/null`), then that end shuts its
//! writing side: once the replies run out the client sees EOF, so it never waits. The client runs
//! a whole session over the other end ([`DpSession::over`]): `/connect`, `/version`,
//! `/xsk_map_fd` for 1–3 devices, optionally `/config_busy_poll` with a descriptor, optionally
//! `/fin`; it stops at the first error.
//!
//! Checks beyond "no panic": every step's result (success or the exact [`DpError`] variant) is
//! the one a model of the client's rules (shared/afxdp-dp-protocol.md §6) predicts from the
//! reply; no step ever times out (the replies are all there, then EOF); and the plugin's end
//! received exactly the requests of the steps attempted, in order, each ≤ 64 bytes but
//! `/connect`, with one descriptor on `/config_busy_poll` and none elsewhere.
//!
//! Input: byte 0 = flags (bits 0–1 hostname: a pod name, 55 characters, 60 characters, one with
//! a comma; bits 2–3 devices, 0 and 1 meaning one; bit 4 busy poll; bit 5 `/fin`), bytes 1–4 the
//! busy-poll timeout and budget (u16 each), then up to 16 replies, each a header byte (bits 0–1:
//! descriptors 0/1/2/4; bit 2: a dictionary reply, index in the next byte, else a u16 length
//! (mod 321) and that many bytes) — see [`encode_dp_replies`].

use crate::input::Input;
use cnet_apps::deviceplugin::{wire, DpError, DpSession};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Replies the plugin sends, for the dictionary form.
pub const DP_REPLIES: &[&[u8]] = &[
    b"/host_ok",
    b"/host_nak",
    b"/error",
    b"0.1",
    b"/fd_ack",
    b"/fd_nak",
    b"/nak",
    b"/config_busy_poll_ack",
    b"/config_busy_poll_nak",
    b"/fin_ack",
    b"",
    b"0.2",
    b"/host_ok\0",
    b"/fd_ack ",
];

/// The client's receive buffer (replies longer than this are errors).
const CLIENT_BUF: usize = 256;
/// Longest raw reply generated.
const MAX_REPLY: usize = CLIENT_BUF + 64;

/// One reply as the fuzz input describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpReply {
    /// The datagram.
    pub bytes: Vec<u8>,
    /// Descriptors attached (0, 1, 2 or 4).
    pub fds: usize,
}

/// Encodes a fuzz input: `flags`, busy-poll timeout and budget, and the replies (as raw bytes).
pub fn encode_dp_replies(flags: u8, timeout: u16, budget: u16, replies: &[DpReply]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend(timeout.to_be_bytes());
    v.extend(budget.to_be_bytes());
    for r in replies {
        let fds = match r.fds {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => 3,
        };
        match DP_REPLIES.iter().position(|d| *d == r.bytes.as_slice()) {
            Some(i) => v.extend([fds | 4, i as u8]),
            None => {
                v.push(fds);
                v.extend((r.bytes.len().min(MAX_REPLY) as u16).to_be_bytes());
                v.extend(&r.bytes[..r.bytes.len().min(MAX_REPLY)]);
            }
        }
    }
    v
}

fn decode(data: &[u8]) -> (u8, u16, u16, Vec<DpReply>) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let (timeout, budget) = (inp.u16(), inp.u16());
    let mut replies = Vec::new();
    while !inp.is_empty() && replies.len() < 16 {
        let h = inp.u8();
        let fds = [0, 1, 2, 4][usize::from(h & 3)];
        let bytes = if h & 4 != 0 {
            DP_REPLIES[usize::from(inp.u8()) % DP_REPLIES.len()].to_vec()
        } else {
            let n = usize::from(inp.u16()) % (MAX_REPLY + 1);
            inp.bytes(n).to_vec()
        };
        replies.push(DpReply { bytes, fds });
    }
    (flags, timeout, budget, replies)
}

/// What the model expects of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Closed,
    Unexpected,
    UnexpectedFd,
    HostNak,
    PodResources,
    Version,
    Nak,
    FdNak,
    FdMissing,
    BadFds,
    BusyPollNak,
    BadRequest,
}

fn got(r: &Result<(), DpError>) -> Want {
    match r {
        Ok(()) => Want::Ok,
        Err(DpError::Closed { .. }) => Want::Closed,
        Err(DpError::Unexpected { .. }) => Want::Unexpected,
        Err(DpError::UnexpectedFd { .. }) => Want::UnexpectedFd,
        Err(DpError::HostNak { .. }) => Want::HostNak,
        Err(DpError::PodResources { .. }) => Want::PodResources,
        Err(DpError::Version { .. }) => Want::Version,
        Err(DpError::Nak { .. }) => Want::Nak,
        Err(DpError::FdNak { .. }) => Want::FdNak,
        Err(DpError::FdMissing { .. }) => Want::FdMissing,
        Err(DpError::BadFds { .. }) => Want::BadFds,
        Err(DpError::BusyPollNak) => Want::BusyPollNak,
        Err(DpError::BadRequest { .. }) => Want::BadRequest,
        Err(e) => panic!("a step failed in a way no reply explains: {e}"),
    }
}

/// The client's reading of one reply (§6): EOF, too long, descriptors, then the text.
enum Read<'a> {
    Fail(Want),
    Text(&'a [u8], usize),
}

fn read(r: Option<&DpReply>) -> Read<'_> {
    match r {
        // A zero-length datagram reads as EOF too.
        None => Read::Fail(Want::Closed),
        Some(r) if r.bytes.is_empty() => Read::Fail(Want::Closed),
        Some(r) if r.bytes.len() > CLIENT_BUF => Read::Fail(Want::Unexpected),
        Some(r) => Read::Text(&r.bytes, r.fds),
    }
}

/// A reply that must carry no descriptor, matched against `table` (else `other`).
fn text_reply(r: Option<&DpReply>, table: &[(&[u8], Want)], other: Want) -> Want {
    match read(r) {
        Read::Fail(w) => w,
        Read::Text(_, fds) if fds > 0 => Want::UnexpectedFd,
        Read::Text(t, _) => table
            .iter()
            .find(|(s, _)| *s == t)
            .map_or(other, |(_, w)| *w),
    }
}

fn want_fd(r: Option<&DpReply>) -> Want {
    match read(r) {
        Read::Fail(w) => w,
        // The client's buffer has room for one descriptor: more is cut (MSG_CTRUNC).
        Read::Text(b"/fd_ack", 0) => Want::FdMissing,
        Read::Text(b"/fd_ack", 1) => Want::Ok,
        Read::Text(b"/fd_ack", _) => Want::BadFds,
        Read::Text(_, fds) if fds > 0 => Want::UnexpectedFd,
        Read::Text(b"/fd_nak", _) => Want::FdNak,
        Read::Text(b"/nak", _) => Want::Nak,
        Read::Text(..) => Want::Unexpected,
    }
}

/// Checks one step's result against the model; true when it succeeded.
fn step(name: String, want: Want, r: Result<(), DpError>) -> bool {
    let g = got(&r);
    assert_eq!(g, want, "step {name}: got {r:?}");
    if let Err(e) = &r {
        assert!(!e.to_string().is_empty());
    }
    g == Want::Ok
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("/dev/null opens")
        .into()
}

/// Runs one session of the handshake client against the replies in `data`.
pub fn dp_handshake(data: &[u8]) {
    let (flags, timeout, budget, replies) = decode(data);
    let host = match flags & 3 {
        0 => "cnet-pod-0".to_string(),
        1 => "p".repeat(55),
        2 => "q".repeat(60),
        _ => "pod,0".to_string(),
    };
    let ndev = usize::from((flags >> 2) & 3).max(1);
    let devs = &["dpa", "dpb", "dpc"][..ndev];
    let (busy, fin) = (flags & 0x10 != 0, flags & 0x20 != 0);

    let (client, plugin) = wire::pair().expect("socketpair");
    for r in &replies {
        let held: Vec<OwnedFd> = (0..r.fds).map(|_| dev_null()).collect();
        let raw: Vec<RawFd> = held.iter().map(|f| f.as_raw_fd()).collect();
        wire::send_fds(plugin.as_fd(), &r.bytes, &raw).expect("queueing a reply");
    }
    // SAFETY: shutdown(2) on our own socket.
    unsafe { libc::shutdown(plugin.as_raw_fd(), libc::SHUT_WR) };

    let mut next = replies.iter();
    let mut sent: Vec<(String, usize)> = Vec::new();

    // /connect and /version.
    let connect = format!("/connect,{host}");
    let session = if host.contains(',') {
        let r = DpSession::over(client, &host, Duration::from_secs(1));
        step(connect, Want::BadRequest, r.map(|_| ()));
        None
    } else {
        sent.push((connect.clone(), 0));
        let c = next.next();
        let mut want = text_reply(
            c,
            &[
                (b"/host_ok", Want::Ok),
                (b"/host_nak", Want::HostNak),
                (b"/error", Want::PodResources),
            ],
            Want::Unexpected,
        );
        if want == Want::PodResources {
            next.next(); // drained
        }
        if want == Want::Ok {
            sent.push(("/version".into(), 0));
            want = text_reply(
                next.next(),
                &[(b"0.1", Want::Ok), (b"/nak", Want::Nak)],
                Want::Version,
            );
        }
        match DpSession::over(client, &host, Duration::from_secs(1)) {
            Ok(s) => {
                step(connect, want, Ok(()));
                Some(s)
            }
            Err(e) => {
                step(connect, want, Err(e));
                None
            }
        }
    };
    if let Some(mut s) = session {
        let mut ok = true;
        for d in devs {
            let req = format!("/xsk_map_fd,{d}");
            sent.push((req.clone(), 0));
            let r = s.map_fd(d).map(|fd| {
                // A descriptor that arrived is open (and ours to close).
                assert!(fd.try_clone().is_ok());
            });
            ok = step(req, want_fd(next.next()), r);
            if !ok {
                break;
            }
        }
        if ok && busy {
            let req = format!("/config_busy_poll,{timeout},{budget}");
            sent.push((req.clone(), 1));
            let want = text_reply(
                next.next(),
                &[
                    (b"/config_busy_poll_ack", Want::Ok),
                    (b"/config_busy_poll_nak", Want::BusyPollNak),
                    (b"/nak", Want::Nak),
                ],
                Want::Unexpected,
            );
            let xsk = dev_null();
            ok = step(
                req,
                want,
                s.config_busy_poll(xsk.as_fd(), timeout.into(), budget.into()),
            );
        }
        if ok && fin {
            sent.push(("/fin".into(), 0));
            let want = text_reply(
                next.next(),
                &[(b"/fin_ack", Want::Ok), (b"/nak", Want::Nak)],
                Want::Unexpected,
            );
            step("/fin".into(), want, s.fin());
        }
    }
    // The session is closed: what reached the plugin, then EOF.
    let mut received = Vec::new();
    // A client closing with replies unread resets the connection: the first read reports
    // ECONNRESET (once), the requests queued before still follow.
    let mut resets = 0;
    loop {
        let mut buf = [0u8; 128];
        let m = match wire::recv_with(plugin.as_fd(), &mut buf, 2) {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) && resets == 0 => {
                resets += 1;
                continue;
            }
            Err(e) => panic!("reading the requests: {e}"),
        };
        if m.len == 0 && !m.truncated {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..m.len.min(buf.len())]).into_owned();
        received.push((text, m.fds.len()));
    }
    assert_eq!(received, sent, "the requests the plugin received");
    for (r, _) in &received {
        assert!(
            r.len() <= 64 || r.starts_with("/connect,"),
            "request over the plugin's 64 bytes: {r:?}"
        );
    }
}
