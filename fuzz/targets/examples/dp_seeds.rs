//! Writes the seed corpus of the `dp_handshake` target to `fuzz/corpus/dp_handshake/`: a good
//! session and one input per error path of shared/afxdp-dp-protocol.md §9.
//!
//! `cargo run -p cnet-fuzz-targets --example dp_seeds`

use cnet_fuzz_targets::{encode_dp_replies, DpReply};
use std::path::Path;

fn r(bytes: &[u8], fds: usize) -> DpReply {
    DpReply {
        bytes: bytes.to_vec(),
        fds,
    }
}

fn main() -> std::io::Result<()> {
    // Flags: bits 0-1 hostname kind, bits 2-3 devices, bit 4 busy poll, bit 5 /fin.
    let all = (2 << 2) | 0x10 | 0x20;
    let ok = || vec![r(b"/host_ok", 0), r(b"0.1", 0)];
    let with = |mut v: Vec<DpReply>, more: &[DpReply]| {
        v.extend_from_slice(more);
        v
    };
    let fd = r(b"/fd_ack", 1);
    // Two maps, then the given busy-poll and /fin replies.
    let full =
        |busy: &[u8], fin: &[u8]| with(ok(), &[fd.clone(), fd.clone(), r(busy, 0), r(fin, 0)]);
    let seeds: Vec<(&str, u8, Vec<DpReply>)> = vec![
        (
            "good-session",
            all,
            full(b"/config_busy_poll_ack", b"/fin_ack"),
        ),
        ("host-nak", all, vec![r(b"/host_nak", 0)]),
        (
            "pod-resources-down",
            all,
            vec![r(b"/error", 0), r(b"/host_nak", 0)],
        ),
        ("wrong-version", all, vec![r(b"/host_ok", 0), r(b"0.2", 0)]),
        ("version-nak", all, vec![r(b"/host_ok", 0), r(b"/nak", 0)]),
        ("fd-nak", all, with(ok(), &[fd.clone(), r(b"/fd_nak", 0)])),
        ("fd-ack-without-fd", all, with(ok(), &[r(b"/fd_ack", 0)])),
        ("fd-ack-two-fds", all, with(ok(), &[r(b"/fd_ack", 2)])),
        ("fd-ack-four-fds", all, with(ok(), &[r(b"/fd_ack", 4)])),
        ("fd-on-host-ok", all, vec![r(b"/host_ok", 1)]),
        ("fd-on-fd-nak", all, with(ok(), &[r(b"/fd_nak", 1)])),
        (
            "busy-poll-nak",
            all,
            with(
                ok(),
                &[fd.clone(), fd.clone(), r(b"/config_busy_poll_nak", 0)],
            ),
        ),
        ("fin-nak", all, full(b"/config_busy_poll_ack", b"/nak")),
        ("closes-after-host-ok", all, vec![r(b"/host_ok", 0)]),
        ("closes-at-once", all, vec![]),
        ("empty-datagram", all, vec![r(b"", 0)]),
        ("long-reply", all, vec![r(&b"/host_ok".repeat(40), 0)]),
        ("garbage", all, with(ok(), &[r(b"\xff\xfe\x00/fd_ok", 0)])),
        (
            "hostname-55",
            1 | (1 << 2) | 0x20,
            with(ok(), &[fd.clone(), r(b"/fin_ack", 0)]),
        ),
        ("hostname-60", 2 | (1 << 2), vec![r(b"/host_nak", 0)]),
        ("hostname-comma", 3, vec![r(b"/host_ok", 0)]),
        (
            "three-devices",
            (3 << 2) | 0x20,
            with(ok(), &[fd.clone(), fd.clone(), fd, r(b"/fin_ack", 0)]),
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/dp_handshake");
    std::fs::create_dir_all(&dir)?;
    for (name, flags, replies) in &seeds {
        std::fs::write(dir.join(name), encode_dp_replies(*flags, 20, 64, replies))?;
    }
    eprintln!("dp_handshake: {} seeds in {}", seeds.len(), dir.display());
    Ok(())
}
