//! # cnet-fuzz-targets: the logic of every cnet fuzz target, as plain functions
//!
//! Each `pub fn NAME(data: &[u8])` is one fuzz target. It must never panic for any input: a panic
//! is either a bug in the stack or a broken invariant the target checks (with `assert!`). The same
//! functions run in two ways:
//!
//! - under libFuzzer, through the thin wrappers in `fuzz/fuzz_targets/NAME.rs` (`cargo fuzz run
//!   NAME`, see `docs/FUZZING.md`);
//! - under `cargo test`, where `tests/replay.rs` runs every file of `fuzz/corpus/NAME/` and
//!   `fuzz/regressions/NAME/` through `NAME`, so CI guards regressions without a fuzzer.
//!
//! | target | what it drives | checks beyond "no panic" |
//! |---|---|---|
//! | [`eth`] | one frame through a `Stack` | Ethernet demux agrees with `smoltcp::wire`; accounting |
//! | [`arp`] | `ArpPacket::parse`, then the stack's ARP input | differential vs smoltcp; round trip; reply fields |
//! | [`ipv4`] | `parse_ipv4`, then the stack (raw, and with the header checksum fixed) | differential vs smoltcp |
//! | [`icmp`] | an ICMP message in a valid IPv4 frame | echo reply = request with type 0, checksums valid |
//! | [`udp`] | a UDP header and payload in a valid IPv4 frame | delivered payload = sent payload |
//! | [`tcp`] | `tcp::wire::parse`, then segments to a listener and a connection | emit/parse round trip of options; accounting |
//! | [`checksum`] | `wire::checksum` | differential vs RFC 1071's code; split sums; RFC 1624 update |
//! | [`reassembly`] | `Reassembler` alone | outcome by outcome against a byte-map model |
//! | [`ipv4_frags`] | fragment sequences through the stack | echo replies of reassembled datagrams carry the sent bytes |
//! | [`stack`] | the whole stack: frame bursts, time, config, UDP, ping and TCP calls, a TCP peer | every pool frame accounted for, bounded queues and connections, no due timer left |
//! | [`netlink`] | `cnet_netlink::Decoder::decode_bytes`, events applied to a `Stack` | state = fold of emitted events; accounting |
//! | [`config_jsonc`] | `cnet_apps::config::Config::parse` (the JSONC loader of `cnet run`) | errors name the file; valid files translate into port and stack settings |
//! | [`dp_handshake`] | `cnet_apps::deviceplugin::DpSession` fed with AF_XDP device-plugin replies over a socketpair | every step's result as a model of the client's rules predicts; no timeout; the exact requests sent |
//! | [`timer`] | `timer::TimerWheel`: insert, cancel, reschedule, advance (also backwards) | every step against a list model |
//!
//! Inputs are decoded by hand ([`input::Input`]) rather than with the `arbitrary` crate, so that a
//! committed corpus keeps its meaning when dependencies are upgraded.

#![deny(missing_docs)]

mod config_target;
mod dp_target;
pub mod harness;
pub mod input;
mod model;
mod netlink_target;
mod parsers;
mod stack_target;
mod stack_tcp;
mod tcp_target;
mod timer_target;

pub use config_target::config_jsonc;
pub use dp_target::{dp_handshake, encode_dp_replies, DpReply, DP_REPLIES};
pub use model::{ipv4_frags, reassembly};
pub use netlink_target::{datagrams, encode_datagrams, netlink};
pub use parsers::{arp, checksum, eth, icmp, ipv4, udp};
pub use stack_target::stack;
pub use tcp_target::tcp;
pub use timer_target::timer;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its corpus directory and of its cargo-fuzz binary).
pub const TARGETS: &[(&str, Target)] = &[
    ("eth", eth),
    ("arp", arp),
    ("ipv4", ipv4),
    ("icmp", icmp),
    ("udp", udp),
    ("tcp", tcp),
    ("checksum", checksum),
    ("reassembly", reassembly),
    ("ipv4_frags", ipv4_frags),
    ("stack", stack),
    ("netlink", netlink),
    ("timer", timer),
    ("config_jsonc", config_jsonc),
    ("dp_handshake", dp_handshake),
];
