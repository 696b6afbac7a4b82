//! The Internet checksum (RFC 1071), in native byte order: RFC 1071 2(B) lets the sum be
//! computed in either order and byte-swapped once at the end.
//!
//! Two ways to add the words up, chosen once per call by length and CPU:
//! - **wide** (x86-64 with AVX2, detected at run time; inputs of 256 bytes or more): 16-bit
//!   words biased to signed and added pairwise into 32-bit lanes by `vpmaddwd` (`madd_sum`),
//!   three instructions per 32 bytes, the lanes widened to 64 bits every 512 KiB and at the end;
//!   `copy_sum` stores each loaded vector on the way, so the bytes are read once;
//! - **portable** (any CPU, and every input under 256 bytes): 64-bit words added with end-around
//!   carry (`add` + `adc 0`), into four independent accumulators, 32 bytes per iteration, from 32
//!   bytes on.
//!
//! Both give the same 16-bit result; the unit tests and the fuzz target `checksum` compare them
//! with RFC 1071's reference code. [`copy_sum`] copies and sums in one pass (the send paths, which
//! copy the application's bytes into a frame anyway).
//!
//! `sum` returns a partial sum so that pieces (pseudo-header, header, payload spread over a frame
//! chain) can be added before the final fold. A piece of odd length must be last, or be
//! handled with [`Accumulator`], which carries the odd byte over to the next piece.

use core::net::Ipv4Addr;

/// Shortest input for which [`sum`] and [`copy_sum`] take the vector path: below it the
/// detection, the loop set-up and the final reduction cost more than they save (headers and small
/// datagrams stay on the inlined portable code).
const WIDE_MIN: usize = 256;

/// The one's-complement sum of `data` (network order, folded to 16 bits, not inverted), as a `u64`
/// so that sums of pieces and a pseudo-header can be added before the final [`fold`].
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= WIDE_MIN {
        return sum_wide(data);
    }
    to_network(sum_portable(data))
}

/// [`sum`] of a long input: the vector code when the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn sum_wide(data: &[u8]) -> u64 {
    to_network(sum_wide_native(data))
}

/// [`sum_native`] of a long input: the vector code when the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn sum_wide_native(data: &[u8]) -> u64 {
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: `sum_avx2` only needs AVX2, which the CPU has (checked just above).
        return unsafe { sum_avx2(data) };
    }
    sum_portable(data)
}

/// The one's-complement sum of `data` in the CPU's byte order, not folded: for a sum that is
/// checked or written by the caller in that order too ([`pseudo_native`], [`fold`], then
/// `to_ne_bytes` for a checksum field: RFC 1071 2(B)), with no byte swap and one fold for the
/// whole datagram. Pieces add up as for [`sum`] (a piece of odd length must be last).
#[inline]
pub fn sum_native(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= WIDE_MIN {
        return sum_wide_native(data);
    }
    sum_portable(data)
}

/// The IPv4 pseudo-header (RFC 768, RFC 9293 3.1) as a [`sum_native`] partial sum: the address
/// bytes as loaded (32-bit words add up to the same one's-complement sum as their 16-bit
/// halves), the protocol and length words as they lie on the wire.
#[inline]
pub fn pseudo_native(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    u64::from(u32::from_ne_bytes(src.octets()))
        + u64::from(u32::from_ne_bytes(dst.octets()))
        + u64::from(u16::from_ne_bytes([0, proto]))
        + u64::from(u16::from_ne_bytes(len.to_be_bytes()))
}

/// A partial sum in network order ([`sum`]'s form) turned into [`sum_native`]'s order.
#[inline]
pub fn network_to_native(s: u64) -> u64 {
    u64::from(u16::from_be(fold(s)))
}

/// The one's-complement sum of `src` as [`sum`] returns it, while copying `src` into `dst` (same
/// length): the bytes are read once. Panics if the lengths differ, as `copy_from_slice`.
#[inline]
pub fn copy_sum(dst: &mut [u8], src: &[u8]) -> u64 {
    assert_eq!(dst.len(), src.len(), "copy_sum: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if src.len() >= WIDE_MIN && std::is_x86_feature_detected!("avx2") {
        // SAFETY: `copy_sum_avx2` needs AVX2, which the CPU has (checked just above), and equal
        // lengths (asserted above) of at least 32 bytes (`WIDE_MIN`).
        return to_network(unsafe { copy_sum_avx2(dst, src) });
    }
    to_network(copy_sum_blocks(dst, src))
}

/// A native-order 64-bit partial sum, folded and put in network order.
#[inline]
fn to_network(native: u64) -> u64 {
    u16::from_be(fold(native)) as u64
}

/// `a + b` with the carry out added back in (one's-complement addition in 64 bits: `add`, `adc 0`).
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    // Cannot overflow: after a carry out, `s` is at most 2^64 - 2.
    s + c as u64
}

/// The native-order sum of the words of `data` (not folded): 64-bit words with end-around carry,
/// the tail (under 8 bytes) zero-padded on the right.
#[inline]
fn sum_portable(data: &[u8]) -> u64 {
    let mut a = 0u64;
    let mut rest = data;
    if rest.len() >= 32 {
        // Four independent carry chains for longer inputs; headers skip the set-up.
        let (mut b, mut c, mut d) = (0u64, 0u64, 0u64);
        let mut chunks = rest.chunks_exact(32);
        for ch in &mut chunks {
            a = add_carry(a, word64(&ch[0..8]));
            b = add_carry(b, word64(&ch[8..16]));
            c = add_carry(c, word64(&ch[16..24]));
            d = add_carry(d, word64(&ch[24..32]));
        }
        a = add_carry(add_carry(a, b), add_carry(c, d));
        rest = chunks.remainder();
    }
    while rest.len() >= 8 {
        a = add_carry(a, word64(&rest[..8]));
        rest = &rest[8..];
    }
    // The last 0..7 bytes: every 16-bit group lands in some 16-bit lane (they all add up the
    // same), so a 4-byte, a 2-byte and a 1-byte piece (zero-padded on the right) are added as
    // they come, without building a padded word byte by byte.
    let mut t = 0u64;
    if rest.len() >= 4 {
        t += u64::from(word32(&rest[..4]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        t += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        t += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    add_carry(a, t)
}

/// The 8 bytes of `b` as a native-order word (`b` is 8 long).
#[inline(always)]
fn word64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_ne_bytes(w)
}

/// Bytes copied and then summed at a time by [`copy_sum_blocks`]: small enough to be in L1 when
/// summed right after the copy, large enough that the per-block reduction is cheap.
const BLOCK: usize = 256;

/// Copies `src` into `dst` (same length) block by block, summing each block with
/// [`sum_portable`] right after copying it (from L1), and adds the block sums with end-around
/// carry: the bytes come from memory once. The result is a native-order partial sum for
/// [`to_network`]. [`copy_sum`] without AVX2.
#[inline(always)]
fn copy_sum_blocks(dst: &mut [u8], src: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut d = dst.chunks_exact_mut(BLOCK);
    let mut w = src.chunks_exact(BLOCK);
    for (dc, sc) in (&mut d).zip(&mut w) {
        let sc: &[u8; BLOCK] = sc.try_into().expect("chunks_exact gives BLOCK bytes");
        dc.copy_from_slice(sc);
        s = add_carry(s, sum_portable(sc));
    }
    let rest = w.remainder();
    d.into_remainder().copy_from_slice(rest);
    add_carry(s, sum_portable(rest))
}

/// The 4 bytes of `b` as a native-order word (`b` is 4 long).
#[inline(always)]
fn word32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    u32::from_ne_bytes(w)
}

/// Bytes per iteration of [`madd_sum`]: four 32-byte vectors, four independent accumulators.
#[cfg(target_arch = "x86_64")]
const MADD_STEP: usize = 128;

/// Iterations of [`madd_sum`] between two widenings of its 32-bit lanes into the 64-bit total.
/// Each `vpmaddwd` lane result lies in [-65,536, 65,534], so after 4,096 iterations a lane is
/// within 2^28 in magnitude, and the four accumulators add up to within 2^30: no `i32` overflow.
#[cfg(target_arch = "x86_64")]
const MADD_FLUSH: usize = 4096;

/// The native-order sum of the 16-bit words of `src` (not folded; the tail zero-padded on the
/// right), copying `src` to `dst` on the way when `COPY` (`dst` is then valid for `src.len()`
/// bytes of writes and does not overlap `src`; otherwise it is unused).
///
/// Per 32 bytes: one load, the words' top bits flipped (`vpxor` with 0x8000, so an unsigned word
/// `w` reads as the signed `w - 32,768`), one `vpmaddwd` by ones (adds neighbouring words into a
/// 32-bit lane), one `vpaddd`; with `COPY`, one store of the loaded vector. The bias comes back
/// at the end as 32,768 per word. Three instructions per 32 bytes against the five of
/// zero-extending 32-bit words into 64-bit lanes, and with `COPY` the bytes are read once.
///
/// # Safety
/// The CPU must have AVX2; with `COPY`, `dst` must be valid for `src.len()` bytes of writes and
/// `src` at least 32 bytes long (the tail is copied as the last whole vector).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn madd_sum<const COPY: bool>(dst: *mut u8, src: &[u8]) -> u64 {
    use core::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_add_epi64, _mm256_castsi256_si128, _mm256_cvtepi32_epi64,
        _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set1_epi16,
        _mm256_setzero_si256, _mm256_storeu_si256, _mm256_xor_si256,
    };
    let bias = _mm256_set1_epi16(i16::MIN);
    let ones = _mm256_set1_epi16(1);
    // One 32-byte vector at `at` (`at + 32 <= src.len()`, which every caller below keeps):
    // loaded, stored when copying, biased, added pairwise into `acc`.
    let step = |acc: &mut __m256i, at: usize| {
        // SAFETY: `at + 32 <= src.len()` (callers); unaligned loads.
        let v = unsafe { _mm256_loadu_si256(src.as_ptr().add(at).cast::<__m256i>()) };
        if COPY {
            // An opaque store: as a plain store, LLVM turns the loop's stores into a `memcpy`
            // call ahead of the sums (loop idiom recognition), and the bytes are read twice.
            // SAFETY: `dst` is valid for `src.len()` bytes of writes (this function's contract)
            // and `at + 32 <= src.len()`; `vmovdqu` has no alignment requirement, touches no
            // stack and no flags.
            unsafe {
                core::arch::asm!(
                    "vmovdqu ymmword ptr [{p}], {v}",
                    p = in(reg) dst.add(at),
                    v = in(ymm_reg) v,
                    options(nostack, preserves_flags),
                );
            }
        }
        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_xor_si256(v, bias), ones));
    };
    // The four accumulators (within 2^30 together, see MADD_FLUSH) as one i64: 8 lanes of i32
    // into 4 of i64, then a scalar sum.
    let widen = |acc: &[__m256i; 4]| -> i64 {
        let s = _mm256_add_epi32(
            _mm256_add_epi32(acc[0], acc[1]),
            _mm256_add_epi32(acc[2], acc[3]),
        );
        let wide = _mm256_add_epi64(
            _mm256_cvtepi32_epi64(_mm256_castsi256_si128(s)),
            _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(s)),
        );
        let mut lanes = [0i64; 4];
        // SAFETY: `lanes` is 32 bytes of writable memory.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), wide) };
        lanes.iter().sum()
    };
    let vectors = src.len() / 32 * 32;
    let blocks = vectors / MADD_STEP;
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut total: i64 = 0;
    let mut b = 0;
    while b < blocks {
        let end = (b + MADD_FLUSH).min(blocks);
        for i in b..end {
            for (k, a) in acc.iter_mut().enumerate() {
                step(a, i * MADD_STEP + k * 32);
            }
        }
        if end < blocks {
            total += widen(&acc);
            acc = [_mm256_setzero_si256(); 4];
        }
        b = end;
    }
    // Up to three more whole vectors (at most 3 more iterations on one lane: still in range).
    let mut at = blocks * MADD_STEP;
    while at < vectors {
        step(&mut acc[0], at);
        at += 32;
    }
    total += widen(&acc);
    // Undo the bias: every word was read as itself minus 32,768. The result is the plain sum of
    // the words, at most 32,767 per byte: no overflow below 2^48 bytes.
    let body = (total + (vectors / 2) as i64 * 32_768) as u64;
    let tail = &src[vectors..];
    if COPY && !tail.is_empty() {
        // The last 32 bytes in one vector (`copy_sum_avx2` passes at least 32 bytes), rewriting
        // bytes already copied with the same values.
        let end = src.len() - 32;
        // SAFETY: `src.len() >= 32` (contract), so `end + 32 == src.len()` is in bounds, and `dst`
        // is valid for `src.len()` bytes of writes.
        unsafe {
            let v = _mm256_loadu_si256(src.as_ptr().add(end).cast::<__m256i>());
            _mm256_storeu_si256(dst.add(end).cast::<__m256i>(), v);
        }
    }
    // Under 32 bytes, from an even offset (the words line up with the body's).
    add_carry(body, sum_portable(tail))
}

/// The native-order sum of `data` with the vector code ([`madd_sum`]).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(data: &[u8]) -> u64 {
    // SAFETY: AVX2 (this function's contract); `dst` is unused without COPY.
    unsafe { madd_sum::<false>(core::ptr::null_mut(), data) }
}

/// Copies `src` into `dst` and returns the native-order sum of `src`, with the vector code
/// ([`madd_sum`]): each byte is loaded once.
///
/// # Safety
/// The CPU must have AVX2, and `dst.len() == src.len() >= 32` ([`copy_sum`] checks the lengths
/// are equal and takes this path from [`WIDE_MIN`] bytes on).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_sum_avx2(dst: &mut [u8], src: &[u8]) -> u64 {
    debug_assert!(dst.len() == src.len() && src.len() >= 32);
    // SAFETY: AVX2 and the lengths (this function's contract); `dst` is an exclusive borrow, so
    // valid for `src.len()` bytes of writes and not overlapping `src`.
    unsafe { madd_sum::<true>(dst.as_mut_ptr(), src) }
}

/// Folds a 64-bit one's-complement sum into 16 bits (not yet inverted), in whatever byte order it
/// was summed: two end-around-carry additions of the halves.
#[inline]
pub fn fold(s: u64) -> u16 {
    // 64 → 32: after a carry out the low half is at most 2^32 - 2, so adding the carry fits.
    let (lo, c) = (s as u32).overflowing_add((s >> 32) as u32);
    let s = lo + c as u32;
    // 32 → 16, the same way.
    let (lo, c) = (s as u16).overflowing_add((s >> 16) as u16);
    lo + c as u16
}

/// True if an option-less IPv4 header's checksum verifies (RFC 791 3.1, RFC 1071): its ten words
/// add up to all ones. Three wide additions with end-around carry, inlined into the receive loop
/// (the same answer as `checksum(h) == 0`, which the unit tests compare).
#[inline(always)]
pub fn ipv4_header_ok(h: &[u8; 20]) -> bool {
    let (a, rest) = h.split_first_chunk::<8>().expect("20 bytes");
    let (b, c) = rest.split_first_chunk::<8>().expect("12 bytes");
    let c = u32::from_ne_bytes(*c.first_chunk::<4>().expect("4 bytes"));
    let s = add_carry(u64::from_ne_bytes(*a), u64::from_ne_bytes(*b));
    // Either byte order: all ones is its own byte swap.
    fold(add_carry(s, u64::from(c))) == 0xffff
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
        let mut s: u64 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += w as u64;
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

    /// Native-order sums with the native pseudo-header verify and produce the same checksum
    /// fields as the network-order ones, for every length and both halves of the address space.
    #[test]
    fn native_order_sums_agree_with_network_order() {
        let data = noise(700, 0x5bd1);
        for len in 0..data.len() {
            let d = &data[..len];
            let (src, dst) = (
                Ipv4Addr::new(d.first().copied().unwrap_or(1), 18, 0, 1),
                Ipv4Addr::new(198, 255, (len >> 2) as u8, 0xfe),
            );
            let (proto, l) = (17u8, len as u16);
            let net = !fold(pseudo_header(src, dst, proto, u32::from(l)) + sum(d));
            let nat = !fold(pseudo_native(src, dst, proto, l) + sum_native(d));
            assert_eq!(nat.to_ne_bytes(), net.to_be_bytes(), "len {len}");
            assert_eq!(
                network_to_native(sum(d)),
                u64::from(u16::from_be(fold(sum(d))))
            );
            assert_eq!(
                fold(network_to_native(sum(d))),
                fold(sum_native(d)),
                "len {len}: converted"
            );
            // A datagram carrying its own checksum verifies in native order.
            let mut dg = d.to_vec();
            if len >= 8 {
                dg[6..8].fill(0);
                let c = !fold(pseudo_native(src, dst, proto, l) + sum_native(&dg));
                dg[6..8].copy_from_slice(&c.to_ne_bytes());
                assert_eq!(
                    fold(pseudo_native(src, dst, proto, l) + sum_native(&dg)),
                    0xffff
                );
                assert_eq!(
                    fold(pseudo_header(src, dst, proto, u32::from(l)) + sum(&dg)),
                    0xffff
                );
            }
        }
    }

    /// The inlined IPv4 header check agrees with `checksum(h) == 0` on valid, corrupted and
    /// extreme headers.
    #[test]
    fn ipv4_header_ok_agrees_with_the_checksum() {
        let bytes = noise(20 * 500, 0x9e37);
        for (i, c) in bytes.chunks_exact(20).enumerate() {
            let mut h: [u8; 20] = c.try_into().unwrap();
            assert_eq!(ipv4_header_ok(&h), checksum(&h) == 0, "random {i}");
            h[10..12].fill(0);
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            assert!(ipv4_header_ok(&h), "fixed {i}");
            h[i % 20] ^= 1 << (i % 8);
            assert_eq!(ipv4_header_ok(&h), checksum(&h) == 0, "flipped {i}");
        }
        for h in [[0u8; 20], [0xff; 20]] {
            assert_eq!(ipv4_header_ok(&h), checksum(&h) == 0);
        }
    }

    /// A xorshift byte stream (deterministic, no dependency).
    fn noise(n: usize, mut x: u32) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 7) as u8
            })
            .collect()
    }

    /// Differential: every way of summing (dispatching `sum`, the portable and the vector code,
    /// `copy_sum`, which must also copy exactly) against the reference, over random lengths (odd
    /// ones included), start alignments 0..63 and contents, plus the carry-heavy all-0xff case.
    #[test]
    fn every_sum_matches_reference_at_random_lengths_and_alignments() {
        let big = noise(70_000, 0x9e37_79b9);
        let ones = vec![0xffu8; 70_000];
        let mut r = 0x2545_f491u32;
        let mut next = |m: u32| {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            r % m
        };
        let mut dst = vec![0u8; 70_100];
        for round in 0..1500 {
            let src: &[u8] = if round % 7 == 0 { &ones } else { &big };
            let len = match round % 3 {
                0 => next(130) as usize,
                1 => next(2100) as usize,
                _ => next(66_000) as usize,
            };
            let at = next(64) as usize;
            let dat = next(64) as usize;
            let data = &src[at..at + len];
            let want = reference(data);
            assert_eq!(checksum(data), want, "sum len {len} at {at}");
            assert_eq!(
                !fold(to_network(sum_portable(data))),
                want,
                "portable len {len}"
            );
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 checked just above.
                let w = unsafe { sum_avx2(data) };
                assert_eq!(!fold(to_network(w)), want, "avx2 len {len} at {at}");
            }
            dst.fill(0xa5);
            let c = copy_sum(&mut dst[dat..dat + len], data);
            assert_eq!(!fold(c), want, "copy_sum len {len} at {at}/{dat}");
            assert_eq!(&dst[dat..dat + len], data, "copy_sum copy len {len}");
            assert!(
                dst[..dat].iter().all(|&b| b == 0xa5),
                "copy_sum wrote before"
            );
            assert!(
                dst[dat + len..].iter().all(|&b| b == 0xa5),
                "copy_sum wrote after"
            );
            let mut d2 = vec![0u8; len];
            let c2 = !fold(to_network(copy_sum_blocks(&mut d2, data)));
            assert_eq!((c2, &d2[..]), (want, data), "copy blocks len {len}");
        }
    }

    /// Inputs long enough for the vector code to widen its 32-bit lanes more than once (every
    /// `MADD_FLUSH` iterations), at both extremes of a lane (all ones: every biased word is
    /// +32,767; all zeros: -32,768) and with noise, odd lengths included.
    #[test]
    fn long_inputs_cross_the_lane_widening() {
        let len = 3 * 4096 * 128 + 77;
        for data in [vec![0xffu8; len], vec![0u8; len], noise(len, 0x51ed_270b)] {
            for l in [len, len - 77, 4096 * 128, 4096 * 128 + 1] {
                let d = &data[..l];
                let want = reference(d);
                assert_eq!(checksum(d), want, "sum len {l}");
                let mut dst = vec![0u8; l];
                assert_eq!(!fold(copy_sum(&mut dst, d)), want, "copy_sum len {l}");
                assert_eq!(&dst[..], d);
            }
        }
    }

    /// `fold` against folding 16 bits at a time until nothing carries, at the edges and at random.
    #[test]
    fn fold_matches_folding_until_no_carry() {
        let slow = |mut s: u64| {
            while s >> 16 != 0 {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        let mut x = 0x1234_5678_9abc_def1u64;
        let edges = [
            0,
            1,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
            u64::MAX - 1,
        ];
        for s in edges.into_iter().chain((0..10_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })) {
            assert_eq!(fold(s), slow(s), "{s:#x}");
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn copy_sum_refuses_different_lengths() {
        copy_sum(&mut [0u8; 3], &[0u8; 4]);
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
