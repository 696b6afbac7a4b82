//! The Internet checksum (RFC 1071), computed 32 bits at a time into four independent 64-bit
//! accumulators (no carry chain between them), in native byte order: RFC 1071 2(B) lets the sum be
//! computed in either order and byte-swapped once at the end.
//!
//! `sum` returns a partial sum so that pieces (pseudo-header, header, payload spread over a frame
//! chain) can be added before the final fold. A piece of odd length must be last, or be
//! handled with [`Accumulator`], which carries the odd byte over to the next piece.

use core::net::Ipv4Addr;

/// The one's-complement sum of `data` (network order, folded to 16 bits, not inverted), as a `u64`
/// so that sums of pieces and a pseudo-header can be added before the final [`fold`].
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    // Each 32-bit word added into a u64 cannot overflow for any packet under 2^34 bytes.
    let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
    let mut chunks = data.chunks_exact(16);
    for ch in &mut chunks {
        a += u32::from_ne_bytes([ch[0], ch[1], ch[2], ch[3]]) as u64;
        b += u32::from_ne_bytes([ch[4], ch[5], ch[6], ch[7]]) as u64;
        c += u32::from_ne_bytes([ch[8], ch[9], ch[10], ch[11]]) as u64;
        d += u32::from_ne_bytes([ch[12], ch[13], ch[14], ch[15]]) as u64;
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 4 {
        a += u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        rest = &rest[4..];
    }
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    b += u32::from_ne_bytes(tail) as u64;
    let native = fold_native(a + b + c + d);
    // The folded native-order sum, in network order.
    u16::from_be(native) as u64
}

/// Folds to 16 bits without changing byte order.
#[inline]
fn fold_native(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Folds a 64-bit sum into the 16-bit one's-complement sum (not yet inverted).
#[inline]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for `data`: the inverted folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// The checksum field a sender with checksum offload leaves for the device to finish (Linux
/// `CHECKSUM_PARTIAL`): the folded pseudo-header sum, not inverted, with the payload not summed.
/// A received UDP/TCP checksum that fails verification and equals this is a partial checksum,
/// not random corruption.
#[inline]
pub fn partial(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u16 {
    fold(pseudo_header(src, dst, proto, len))
}

/// Partial sum of the IPv4 pseudo-header (RFC 768, RFC 9293 3.1).
#[inline]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u64 {
    let s = u32::from(src) as u64;
    let d = u32::from(dst) as u64;
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + proto as u64 + len as u64
}

/// A running sum over pieces of any length (a datagram spread over a frame chain).
#[derive(Debug, Default, Clone, Copy)]
pub struct Accumulator {
    sum: u64,
    odd: bool,
}

impl Accumulator {
    /// Starts from a partial sum (e.g. the pseudo-header's).
    pub fn new(initial: u64) -> Self {
        Accumulator {
            sum: fold(initial) as u64,
            odd: false,
        }
    }

    /// Adds the next piece.
    pub fn add(&mut self, data: &[u8]) {
        let s = fold(sum(data)) as u64;
        // A piece that starts at an odd offset has its bytes in swapped lanes (RFC 1071 2(B)).
        let s = if self.odd { s.swap_bytes() >> 48 } else { s };
        self.sum += s;
        if data.len() % 2 == 1 {
            self.odd = !self.odd;
        }
    }

    /// The checksum field value.
    pub fn finish(self) -> u16 {
        !fold(self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's reference algorithm, for differential testing.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += w as u32;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn matches_reference_for_all_lengths() {
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in 0..300 {
            assert_eq!(checksum(&data[..len]), reference(&data[..len]), "len {len}");
        }
        assert_eq!(checksum(&data), reference(&data));
        assert_eq!(checksum(&[0xff; 1499]), reference(&[0xff; 1499]));
    }

    #[test]
    fn accumulator_over_odd_pieces_equals_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [1usize, 3, 7, 8, 9, 500, 999] {
            for split2 in [split + 1, split + 5, 1000] {
                let split2 = split2.min(1000);
                let mut a = Accumulator::new(0);
                a.add(&data[..split]);
                a.add(&data[split..split2]);
                a.add(&data[split2..]);
                assert_eq!(a.finish(), reference(&data), "{split}/{split2}");
            }
        }
    }

    #[test]
    fn verifying_a_correct_packet_gives_zero() {
        let mut pkt = vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let c = checksum(&pkt);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&pkt), 0);
    }
}

/// Incremental update of a checksum field when one 16-bit word changes (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    !fold(!hc as u64 + !old as u64 + new as u64)
}

#[cfg(test)]
mod update_tests {
    use super::*;

    #[test]
    fn incremental_update_equals_recompute() {
        let mut pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        let upd = update(c, 0x0800, 0x0000);
        pkt[0] = 0;
        pkt[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(upd, checksum(&pkt));
    }
}
