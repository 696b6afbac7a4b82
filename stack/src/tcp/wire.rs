//! TCP segment header and options (RFC 9293 3.1, RFC 7323, RFC 2018): parse with a reason on
//! failure, emit every field.
//!
//! Parsing checks the fixed header and the data offset once; option parsing never reads past the
//! header and rejects malformed lengths (RFC 9293 3.1: "a TCP implementation MUST be able to
//! receive a TCP option in any segment" and MUST handle an illegal option length without crashing).

use arrayvec::ArrayVec;

/// Fixed TCP header length.
pub const TCP_HLEN: usize = 20;
/// Longest TCP header (data offset 15).
pub const TCP_MAX_HLEN: usize = 60;

/// Header flags.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
}

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TS: u8 = 8;

/// Why a segment was rejected before any state was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpParseError {
    /// Shorter than the fixed header.
    Truncated,
    /// Data offset below 5 or beyond the segment.
    BadDataOffset,
    /// An option's length is below 2 or runs past the header, or a known option has the wrong size.
    BadOption,
}

/// Options of a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentOptions {
    /// Maximum segment size (SYN only).
    pub mss: Option<u16>,
    /// Window scale shift (SYN only), clamped to 14 (RFC 7323 2.3).
    pub wscale: Option<u8>,
    /// SACK permitted (SYN only).
    pub sack_permitted: bool,
    /// Timestamps: (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks (left, right), at most 4.
    pub sack: ArrayVec<(u32, u32), 4>,
}

/// A parsed segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Header length in bytes.
    pub hdr_len: usize,
    /// Flags (see [`flags`]).
    pub flags: u8,
    /// Window field (unscaled).
    pub window: u16,
    /// Checksum field.
    pub checksum: u16,
    /// Options.
    pub opts: SegmentOptions,
}

impl TcpHeader {
    /// True if `f` is set.
    #[inline]
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Parses the header at the start of `b` (which holds at least the first frame of the segment);
/// `seg_len` is the whole segment's length.
pub fn parse(b: &[u8], seg_len: usize) -> Result<TcpHeader, TcpParseError> {
    if b.len() < TCP_HLEN || seg_len < TCP_HLEN {
        return Err(TcpParseError::Truncated);
    }
    let hdr_len = ((b[12] >> 4) as usize) * 4;
    if hdr_len < TCP_HLEN || hdr_len > b.len() || hdr_len > seg_len {
        return Err(TcpParseError::BadDataOffset);
    }
    let opts = parse_options(&b[TCP_HLEN..hdr_len], b[13] & flags::SYN != 0)?;
    Ok(TcpHeader {
        src_port: u16::from_be_bytes([b[0], b[1]]),
        dst_port: u16::from_be_bytes([b[2], b[3]]),
        seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ack: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        hdr_len,
        flags: b[13] & 0x3f,
        window: u16::from_be_bytes([b[14], b[15]]),
        checksum: u16::from_be_bytes([b[16], b[17]]),
        opts,
    })
}

fn parse_options(mut o: &[u8], syn: bool) -> Result<SegmentOptions, TcpParseError> {
    let mut opts = SegmentOptions::default();
    while let Some(&kind) = o.first() {
        match kind {
            OPT_END => break,
            OPT_NOP => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let len = *o.get(1).ok_or(TcpParseError::BadOption)? as usize;
        if len < 2 || len > o.len() {
            return Err(TcpParseError::BadOption);
        }
        let body = &o[2..len];
        match kind {
            OPT_MSS => {
                if body.len() != 2 {
                    return Err(TcpParseError::BadOption);
                }
                // RFC 9293 3.7.1: MSS is only meaningful on a SYN; ignored elsewhere.
                if syn {
                    opts.mss = Some(u16::from_be_bytes([body[0], body[1]]));
                }
            }
            OPT_WS => {
                if body.len() != 1 {
                    return Err(TcpParseError::BadOption);
                }
                // RFC 7323 2.3: a shift above 14 is treated as 14 (and SHOULD be logged).
                if syn {
                    opts.wscale = Some(body[0].min(14));
                }
            }
            OPT_SACK_PERM => {
                if !body.is_empty() {
                    return Err(TcpParseError::BadOption);
                }
                opts.sack_permitted = syn;
            }
            OPT_TS => {
                if body.len() != 8 {
                    return Err(TcpParseError::BadOption);
                }
                let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                opts.timestamps = Some((v, e));
            }
            OPT_SACK => {
                if body.is_empty() || !body.len().is_multiple_of(8) || body.len() > 32 {
                    return Err(TcpParseError::BadOption);
                }
                for c in body.chunks_exact(8) {
                    let l = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    let r = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
                    // Capacity 4 and at most 32/8 = 4 blocks: cannot fail.
                    let _ = opts.sack.try_push((l, r));
                }
            }
            _ => {} // RFC 9293 3.1: unknown options are skipped by their length.
        }
        o = &o[len..];
    }
    Ok(opts)
}

/// What to emit.
#[derive(Debug, Clone, Default)]
pub struct Emit {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (sent only with ACK).
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window field (already scaled down).
    pub window: u16,
    /// Options.
    pub opts: SegmentOptions,
}

impl Emit {
    /// Header length with options, padded to 4 bytes.
    pub fn header_len(&self) -> usize {
        let o = &self.opts;
        let mut n = 0;
        if o.mss.is_some() {
            n += 4;
        }
        if o.wscale.is_some() {
            n += 4; // NOP + 3
        }
        if o.timestamps.is_some() {
            n += 12; // NOP NOP + 10 (or SACK_PERM + 10 when both)
        } else if o.sack_permitted {
            n += 4; // NOP NOP + 2
        }
        if !o.sack.is_empty() {
            n += 4 + 8 * o.sack.len(); // NOP NOP + 2 + blocks
        }
        (TCP_HLEN + n).min(TCP_MAX_HLEN)
    }

    /// Writes the header (checksum zero) into `b[..header_len()]`.
    pub fn write(&self, b: &mut [u8]) {
        let hl = self.header_len();
        b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        let ack = if self.flags & flags::ACK != 0 {
            self.ack
        } else {
            0
        };
        b[8..12].copy_from_slice(&ack.to_be_bytes());
        b[12] = ((hl / 4) as u8) << 4;
        b[13] = self.flags;
        b[14..16].copy_from_slice(&self.window.to_be_bytes());
        b[16..20].copy_from_slice(&[0, 0, 0, 0]);
        let mut i = TCP_HLEN;
        let o = &self.opts;
        if let Some(m) = o.mss {
            b[i..i + 4].copy_from_slice(&[OPT_MSS, 4, (m >> 8) as u8, m as u8]);
            i += 4;
        }
        if let Some((v, e)) = o.timestamps {
            if o.sack_permitted {
                b[i..i + 2].copy_from_slice(&[OPT_SACK_PERM, 2]);
            } else {
                b[i..i + 2].copy_from_slice(&[OPT_NOP, OPT_NOP]);
            }
            b[i + 2..i + 4].copy_from_slice(&[OPT_TS, 10]);
            b[i + 4..i + 8].copy_from_slice(&v.to_be_bytes());
            b[i + 8..i + 12].copy_from_slice(&e.to_be_bytes());
            i += 12;
        } else if o.sack_permitted {
            b[i..i + 4].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2]);
            i += 4;
        }
        // Window scale after SACK-permitted / timestamps, as Linux orders them.
        if let Some(ws) = o.wscale {
            b[i..i + 4].copy_from_slice(&[OPT_NOP, OPT_WS, 3, ws]);
            i += 4;
        }
        if !o.sack.is_empty() && i + 4 + 8 * o.sack.len() <= hl {
            b[i..i + 4].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * o.sack.len() as u8]);
            i += 4;
            for (l, r) in &o.sack {
                b[i..i + 4].copy_from_slice(&l.to_be_bytes());
                b[i + 4..i + 8].copy_from_slice(&r.to_be_bytes());
                i += 8;
            }
        }
        debug_assert!(i <= hl);
        b[i..hl].fill(OPT_NOP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips_every_option() {
        let mut e = Emit {
            src_port: 1234,
            dst_port: 80,
            seq: 7,
            ack: 9,
            flags: flags::SYN | flags::ACK,
            window: 4096,
            opts: SegmentOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: Some((11, 22)),
                sack: ArrayVec::new(),
            },
        };
        let mut b = [0u8; 60];
        let hl = e.header_len();
        assert_eq!(hl, 40);
        e.write(&mut b);
        let h = parse(&b[..hl], hl).unwrap();
        assert_eq!(h.opts, e.opts);
        assert_eq!((h.seq, h.ack, h.window, h.hdr_len), (7, 9, 4096, 40));
        e.flags = flags::ACK;
        e.opts = SegmentOptions {
            timestamps: Some((5, 6)),
            sack: [(100, 200), (300, 400), (500, 600)].into_iter().collect(),
            ..SegmentOptions::default()
        };
        let hl = e.header_len();
        assert_eq!(hl, 20 + 12 + 28);
        e.write(&mut b);
        let h = parse(&b[..hl], hl).unwrap();
        assert_eq!(
            h.opts.sack.as_slice(),
            &[(100, 200), (300, 400), (500, 600)]
        );
        assert_eq!(h.opts.timestamps, Some((5, 6)));
    }

    #[test]
    fn malformed_headers_say_why() {
        let mut b = [0u8; 28];
        b[12] = 0x40;
        assert_eq!(parse(&b, 28), Err(TcpParseError::BadDataOffset));
        b[12] = 0x80;
        assert_eq!(parse(&b, 28), Err(TcpParseError::BadDataOffset));
        assert_eq!(parse(&b[..10], 10), Err(TcpParseError::Truncated));
        b[12] = 0x70;
        b[20] = OPT_MSS;
        b[21] = 0;
        assert_eq!(parse(&b, 28), Err(TcpParseError::BadOption));
        b[21] = 9;
        assert_eq!(parse(&b, 28), Err(TcpParseError::BadOption));
        b[20] = 99;
        b[21] = 8;
        assert!(parse(&b, 28).is_ok(), "unknown options are skipped");
    }
}
