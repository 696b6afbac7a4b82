//! SYN cookies: a listener whose SYN queue is full answers with a SYN-ACK whose sequence number
//! encodes the connection, and keeps no state (the defence of RFC 4987 3.6).
//!
//! Cookie layout (our ISN): `t:5 | mss_idx:3 | mac:24`, where `t` counts 64-second periods, and
//! `mac` is the keyed hash of the 4-tuple, `t` and the peer's ISN. A cookie is valid for two
//! periods. When the peer sent timestamps, the low 6 bits of our TSval carry the window scale
//! (4 bits, 15 = none) and SACK-permitted (1 bit), as Linux does; without timestamps a cookie
//! connection has neither.

use super::isn::Key;
use crate::time::Instant;
use core::net::SocketAddrV4;

/// MSS values a cookie can carry (the largest not above the peer's is chosen).
pub(crate) const MSS_TABLE: [u16; 8] = [536, 1000, 1200, 1300, 1380, 1440, 1452, 1460];

fn period(now: Instant) -> u32 {
    (now.total_millis() / 64_000) as u32
}

fn mac(key: &Key, local: SocketAddrV4, remote: SocketAddrV4, t: u32, peer_isn: u32) -> u32 {
    let extra = (u64::from(t & 31) << 32) | u64::from(peer_isn);
    (key.tuple(local, remote, 3, extra) as u32) & 0x00ff_ffff
}

/// Our ISN for a cookie SYN-ACK, and the MSS it encodes.
pub(crate) fn make(
    key: &Key,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    peer_isn: u32,
    peer_mss: u16,
    now: Instant,
) -> (u32, u16) {
    let idx = MSS_TABLE.iter().rposition(|&m| m <= peer_mss).unwrap_or(0);
    let t = period(now);
    let cookie = ((t & 31) << 27) | ((idx as u32) << 24) | mac(key, local, remote, t, peer_isn);
    (cookie, MSS_TABLE[idx])
}

/// Checks the cookie acknowledged by `ack` (our ISN + 1) for a peer whose ISN was `seq - 1`;
/// returns the MSS it encodes.
pub(crate) fn check(
    key: &Key,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    seq: u32,
    ack: u32,
    now: Instant,
) -> Option<u16> {
    let cookie = ack.wrapping_sub(1);
    let peer_isn = seq.wrapping_sub(1);
    let ct = cookie >> 27;
    let now_t = period(now);
    // The cookie's period must be this one or the previous one (mod 32).
    let age = now_t.wrapping_sub(ct) & 31;
    if age > 1 {
        return None;
    }
    let t = now_t.wrapping_sub(age);
    if mac(key, local, remote, t, peer_isn) != cookie & 0x00ff_ffff {
        return None;
    }
    Some(MSS_TABLE[((cookie >> 24) & 7) as usize])
}

/// The options encoded in the low bits of a cookie SYN-ACK's TSval.
pub(crate) fn encode_ts(ts: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let ws = u32::from(wscale.map_or(15, |w| w.min(14)));
    (ts & !0x3f) | ws | (u32::from(sack) << 4)
}

/// Decodes what [`encode_ts`] stored: (peer window scale, SACK permitted).
pub(crate) fn decode_ts(tsecr: u32) -> (Option<u8>, bool) {
    let ws = (tsecr & 0xf) as u8;
    ((ws != 15).then_some(ws), tsecr & 0x10 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_checks_within_two_periods_and_only_for_its_connection() {
        let k = Key::new(3, 4);
        let l: SocketAddrV4 = "10.0.0.1:80".parse().unwrap();
        let r: SocketAddrV4 = "10.0.0.2:5555".parse().unwrap();
        let r2: SocketAddrV4 = "10.0.0.2:5556".parse().unwrap();
        let t0 = Instant::from_millis(1000);
        let (c, mss) = make(&k, l, r, 999, 1460, t0);
        assert_eq!(mss, 1460);
        assert_eq!(check(&k, l, r, 1000, c.wrapping_add(1), t0), Some(1460));
        assert_eq!(
            check(
                &k,
                l,
                r,
                1000,
                c.wrapping_add(1),
                Instant::from_millis(100_000)
            ),
            Some(1460)
        );
        assert_eq!(
            check(
                &k,
                l,
                r,
                1000,
                c.wrapping_add(1),
                Instant::from_millis(200_000)
            ),
            None
        );
        assert_eq!(check(&k, l, r2, 1000, c.wrapping_add(1), t0), None);
        assert_eq!(check(&k, l, r, 1001, c.wrapping_add(1), t0), None);
        assert_eq!(decode_ts(encode_ts(12345, Some(7), true)), (Some(7), true));
        assert_eq!(decode_ts(encode_ts(12345, None, false)), (None, false));
    }
}
