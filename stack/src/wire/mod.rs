//! Wire formats: what `smoltcp::wire` lacks, in its shape (field offsets once, checked length, then
//! accessors that cannot panic), plus writers for the headers the stack prepends into headroom.
//!
//! Parsing that must say *why* a packet is bad (we count drops by reason) is done here before the
//! `smoltcp::wire` view is built unchecked over the validated bytes.

pub mod checksum;

use core::net::Ipv4Addr;
use smoltcp::wire::EthernetAddress;

/// Ethernet II header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// ICMP header length (type, code, checksum, 4 bytes rest-of-header).
pub const ICMP_HLEN: usize = 8;
/// ARP packet length for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IP protocol ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol UDP.
pub const PROTO_UDP: u8 = 17;
/// Headroom an application must leave in a frame it sends over UDP.
pub const UDP_HEADROOM: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;

/// Writes an Ethernet II header into `buf[..14]`.
#[inline]
pub fn write_eth(buf: &mut [u8], dst: EthernetAddress, src: EthernetAddress, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// The fields of an IPv4 header the stack emits (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// Type of service byte: DSCP (6 bits) and the ECN field (2 low bits, RFC 3168).
    pub tos: u8,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// Payload length (total length minus 20).
    pub payload_len: u16,
}

impl Ipv4Header {
    /// Writes the header with its checksum into `buf[..20]`.
    #[inline]
    pub fn write(&self, buf: &mut [u8]) {
        let total = self.payload_len.wrapping_add(IPV4_HLEN as u16);
        let flags_frag = ((self.dont_frag as u16) << 14)
            | ((self.more_frags as u16) << 13)
            | ((self.frag_offset / 8) & 0x1fff);
        buf[0] = 0x45;
        buf[1] = self.tos;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        buf[6..8].copy_from_slice(&flags_frag.to_be_bytes());
        buf[8] = self.ttl;
        buf[9] = self.proto;
        buf[10..12].copy_from_slice(&[0, 0]);
        buf[12..16].copy_from_slice(&self.src.octets());
        buf[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&buf[..IPV4_HLEN]);
        buf[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Why an IPv4 header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than 20 bytes or than the total length.
    Truncated,
    /// Version is not 4.
    BadVersion,
    /// IHL below 5 or beyond the buffer.
    BadHeaderLen,
    /// Total length below IHL.
    BadTotalLen,
    /// Header checksum mismatch.
    BadChecksum,
}

/// A validated IPv4 header's fields (RFC 791 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Header length in bytes (with options).
    pub hdr_len: usize,
    /// Total length from the header.
    pub total_len: usize,
    /// Identification.
    pub ident: u16,
    /// Don't fragment.
    pub dont_frag: bool,
    /// More fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: usize,
    /// TTL.
    pub ttl: u8,
    /// Type of service byte: DSCP and the ECN field (2 low bits, RFC 3168).
    pub tos: u8,
    /// Protocol.
    pub proto: u8,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
}

impl Ipv4Info {
    /// True for a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

/// Validates an IPv4 header at the start of `buf` (RFC 1122 3.2.1.1-3.2.1.2: version, header
/// length, total length, checksum). Options are skipped, not interpreted.
pub fn parse_ipv4(buf: &[u8], verify_checksum: bool) -> Result<Ipv4Info, Ipv4Error> {
    // The fixed 20 bytes once, then fields without further bounds checks.
    let Some(h) = buf.first_chunk::<IPV4_HLEN>() else {
        return Err(Ipv4Error::Truncated);
    };
    if h[0] >> 4 != 4 {
        return Err(Ipv4Error::BadVersion);
    }
    let hdr_len = ((h[0] & 0x0f) as usize) * 4;
    if hdr_len < IPV4_HLEN || hdr_len > buf.len() {
        return Err(Ipv4Error::BadHeaderLen);
    }
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total_len < hdr_len {
        return Err(Ipv4Error::BadTotalLen);
    }
    if total_len > buf.len() {
        return Err(Ipv4Error::Truncated);
    }
    if verify_checksum {
        let ok = if hdr_len == IPV4_HLEN {
            checksum::ipv4_header_ok(h)
        } else {
            checksum::checksum(&buf[..hdr_len]) == 0
        };
        if !ok {
            return Err(Ipv4Error::BadChecksum);
        }
    }
    let buf = h;
    let ff = u16::from_be_bytes([buf[6], buf[7]]);
    Ok(Ipv4Info {
        hdr_len,
        total_len,
        ident: u16::from_be_bytes([buf[4], buf[5]]),
        dont_frag: ff & 0x4000 != 0,
        more_frags: ff & 0x2000 != 0,
        frag_offset: ((ff & 0x1fff) as usize) * 8,
        ttl: buf[8],
        tos: buf[1],
        proto: buf[9],
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 20] {
        let mut b = [0u8; 20];
        Ipv4Header {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            proto: PROTO_UDP,
            ttl: 64,
            ident: 7,
            dont_frag: false,
            tos: 0,
            more_frags: true,
            frag_offset: 1480,
            payload_len: 0,
        }
        .write(&mut b);
        b
    }

    #[test]
    fn written_header_parses_back_and_agrees_with_smoltcp() {
        let b = header();
        let i = parse_ipv4(&b, true).unwrap();
        assert_eq!(i.frag_offset, 1480);
        assert!(i.more_frags && i.is_fragment());
        let p = smoltcp::wire::Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.ident(), 7);
    }

    #[test]
    fn every_kind_of_bad_header_has_its_reason() {
        let good = header();
        assert_eq!(parse_ipv4(&good[..19], true), Err(Ipv4Error::Truncated));
        let mut b = good;
        b[0] = 0x65;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::BadVersion));
        b = good;
        b[0] = 0x44;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::BadHeaderLen));
        b = good;
        b[0] = 0x46;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::BadHeaderLen));
        b = good;
        b[3] = 10;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::BadTotalLen));
        b = good;
        b[3] = 40;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::Truncated));
        b = good;
        b[8] ^= 1;
        assert_eq!(parse_ipv4(&b, true), Err(Ipv4Error::BadChecksum));
        assert!(parse_ipv4(&b, false).is_ok());
    }
}
