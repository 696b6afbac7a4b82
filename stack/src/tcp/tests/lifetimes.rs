//! Bounded lifetimes: the user timeout (RFC 5482), the persist timeout, orphans (Linux
//! `tcp_max_orphans`, `tcp_orphan_retries`).

use super::*;

#[test]
fn the_user_timeout_drops_a_connection_whose_data_stays_unacknowledged() {
    let mut p = Peer::with(|c| c.tcp_user_timeout_ms = 3_000);
    let h = p.accept();
    p.s.tcp_send_slice(h, b"anyone there?", p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    // RTOs at 0.2, 0.6, 1.4, 3.0 s: the one at 3.0 s finds the data 3 s old.
    p.advance(2_900);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    p.advance(200);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::TimedOut));
    assert_eq!(p.s.counters().get(Event::TcpUserTimeouts), 1);
}

#[test]
fn the_user_timeout_counts_from_the_last_progress() {
    let mut p = Peer::with(|c| c.tcp_user_timeout_ms = 3_000);
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    for _ in 0..5 {
        p.s.tcp_send_slice(h, b"ping", p.now).unwrap();
        let out = p.poll();
        assert_eq!(out.len(), 1);
        // Acknowledged after two RTOs each time: 1.4 s without progress, never 3 s.
        p.advance(1_000);
        p.ack = out[0].seq + 4;
        p.send(&[p.seg(ACK, b"")]);
    }
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(p.s.counters().get(Event::TcpUserTimeouts), 0);
}

#[test]
fn a_peer_answering_probes_with_a_zero_window_is_dropped_by_the_persist_timeout() {
    let mut p = Peer::with(|c| c.tcp_persist_timeout_ms = 10_000);
    let h = p.accept();
    let mut z = p.seg(ACK, b"");
    z.wnd = 0;
    p.send(&[z]);
    p.s.tcp_send_slice(h, b"blocked", p.now).unwrap();
    assert!(p.poll().is_empty(), "zero window: nothing sent");
    let mut probes = 0;
    for _ in 0..200 {
        for s in p.advance(100) {
            assert!(s.data.is_empty());
            probes += 1;
            let mut z = p.seg(ACK, b"");
            z.wnd = 0;
            p.send(&[z]);
        }
        if p.s.tcp_state(h) == Some(TcpState::Closed) {
            break;
        }
    }
    assert!(probes >= 3, "{probes} probes");
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.counters().get(Event::TcpPersistTimeouts), 1);
    assert!(
        p.now.total_millis() <= 10_000 + 7_000,
        "within one backed-off probe interval"
    );
}

#[test]
fn an_orphan_gives_up_after_tcp_orphan_retries_with_a_reset() {
    let mut p = Peer::with(|c| c.tcp_orphan_retries = 2);
    let h = p.accept();
    p.s.tcp_send_slice(h, b"last words", p.now).unwrap();
    p.s.tcp_close(h, p.now);
    let out = p.poll();
    assert!(!out.is_empty());
    assert_eq!(p.s.tcp.orphans, 1);
    // RTOs at 0.2 (retry 1), 0.6 (retry 2), then 1.4 s: reset.
    let out = p.advance(2_000);
    assert!(out.iter().any(|s| s.flags & RST != 0), "{out:?}");
    assert_eq!(p.s.counters().get(Event::TcpOrphanTimeouts), 1);
    assert_eq!(p.s.tcp_connections(), 0);
    assert_eq!(p.s.tcp.orphans, 0);
}

#[test]
fn beyond_tcp_max_orphans_a_close_resets_at_once() {
    let mut p = Peer::with(|c| c.tcp_max_orphans = 0);
    let h = p.accept();
    p.s.tcp_send_slice(h, b"unsent", p.now).unwrap();
    let _ = p.poll();
    p.s.tcp_close(h, p.now);
    let out = p.poll();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags & RST, RST);
    assert_eq!(p.s.counters().get(Event::TcpTooManyOrphans), 1);
    assert_eq!(p.s.tcp_connections(), 0);
}
