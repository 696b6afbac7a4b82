//! Netlink as `cnet-netlink` decodes it, and its events applied to a stack.

use crate::harness::*;
use crate::input::Input;
use cnet_netlink::{Decoder, FoldedState, RT_TABLE_MAIN};
use cnet_stack::Instant;

/// Splits the input into datagrams: each is a big-endian `u16` length and that many bytes.
pub fn datagrams(data: &[u8]) -> Vec<&[u8]> {
    let mut inp = Input::new(data);
    let mut out = Vec::new();
    while !inp.is_empty() {
        let n = usize::from(inp.u16());
        out.push(inp.bytes(n));
    }
    out
}

/// Encodes datagrams in the format [`datagrams`] reads (for seed corpora).
pub fn encode_datagrams(ds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in ds {
        let d = &d[..d.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Netlink: datagrams (see [`datagrams`]) through one `Decoder` for interface `eth0`, main
/// table. Decoding must not panic; the decoder's state must equal the fold of every event it
/// emitted; the events, applied to a stack as a subscriber would, must keep every frame accounted
/// for.
pub fn netlink(data: &[u8]) {
    let mut dec = Decoder::new("eth0", vec![RT_TABLE_MAIN]);
    let mut folded = FoldedState::new();
    let mut s = new_stack(POOL_FRAMES, true, false);
    let mut now = Instant::from_millis(1);
    for d in datagrams(data) {
        let out = dec.decode_bytes(d);
        for e in out.events {
            assert!(
                folded.apply(&e),
                "an emitted event changes the state: {e:?}"
            );
            s.apply_config(e, now);
            emitted_ipv4(&drain_tx(&mut s, now));
            assert_accounted(&s, 0);
        }
        assert_eq!(&folded, dec.state(), "state = fold of the emitted events");
        now = now + cnet_stack::Duration::from_millis(100);
    }
    assert_no_leak(&mut s);
}
