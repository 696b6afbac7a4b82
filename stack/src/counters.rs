//! Counters: every packet the stack takes in or gives out, and every drop by its reason.
//!
//! Counters are plain `u64`s in a flat array indexed by an enum, cheap enough to bump on every packet.
//! Their names are stable and become Prometheus metric labels.

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Stable snake_case name (metric label).
            pub const fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

reasons! {
    /// Why a frame was dropped.
    DropReason {
        /// Shorter than an Ethernet header.
        EthTruncated => "eth_truncated",
        /// Destination MAC is neither ours, broadcast, nor multicast we listen to.
        EthOtherHost => "eth_other_host",
        /// EtherType we do not handle.
        EthUnknownType => "eth_unknown_type",
        /// ARP packet too short or not Ethernet/IPv4.
        ArpMalformed => "arp_malformed",
        /// ARP operation other than request/reply.
        ArpBadOp => "arp_bad_op",
        /// ARP request for an address that is not ours.
        ArpNotForUs => "arp_not_for_us",
        /// Shorter than an IPv4 header or than its own total length.
        Ipv4Truncated => "ipv4_truncated",
        /// Version field is not 4.
        Ipv4BadVersion => "ipv4_bad_version",
        /// IHL below 5 or beyond the packet.
        Ipv4BadHeaderLen => "ipv4_bad_header_len",
        /// Total length below the header length.
        Ipv4BadTotalLen => "ipv4_bad_total_len",
        /// Header checksum mismatch.
        Ipv4BadChecksum => "ipv4_bad_checksum",
        /// Source is broadcast, multicast, loopback or zero where that is not allowed.
        Ipv4BadSource => "ipv4_bad_source",
        /// Destination is not one of our addresses (we do not forward).
        Ipv4NotForUs => "ipv4_not_for_us",
        /// TTL was zero on arrival.
        Ipv4TtlZero => "ipv4_ttl_zero",
        /// Protocol we do not handle.
        Ipv4UnknownProtocol => "ipv4_unknown_protocol",
        /// A fragment overlapping one already held (the whole datagram is dropped).
        FragOverlap => "frag_overlap",
        /// An exact duplicate of a fragment already held (only the duplicate is dropped).
        FragDuplicate => "frag_duplicate",
        /// A fragment that is malformed (length not a multiple of 8, beyond 64 KiB, ...).
        FragMalformed => "frag_malformed",
        /// Reassembly gave up: time limit reached.
        FragTimeout => "frag_timeout",
        /// Reassembly memory limit reached.
        FragNoMemory => "frag_no_memory",
        /// ICMP shorter than its header or with a bad checksum.
        IcmpMalformed => "icmp_malformed",
        /// ICMP type we do not act on.
        IcmpIgnored => "icmp_ignored",
        /// ICMP error with no matching socket.
        IcmpErrorNoSocket => "icmp_error_no_socket",
        /// Echo reply with no matching ping socket.
        IcmpEchoNoSocket => "icmp_echo_no_socket",
        /// UDP shorter than its header, or length field inconsistent.
        UdpMalformed => "udp_malformed",
        /// UDP checksum mismatch.
        UdpBadChecksum => "udp_bad_checksum",
        /// UDP checksum field holds exactly the pseudo-header sum: the sender offloaded the
        /// checksum (`CHECKSUM_PARTIAL`) and nothing finished it (veth). Fix the sender
        /// (`ethtool -K PEER tx off`) or set `rx_accept_partial_checksum` for a trusted peer.
        UdpPartialChecksum => "udp_partial_checksum",
        /// No socket bound to the destination port.
        UdpNoSocket => "udp_no_socket",
        /// The socket's receive queue is full.
        UdpQueueFull => "udp_queue_full",
        /// The socket already queues [`crate::udp::UDP_SHALLOW_QUEUE`] datagrams and the pool's
        /// free frames are at the receive floor ([`crate::Stack::rx_floor`]): queued received
        /// datagrams may not take the frames senders and the driver need (Linux `udp_mem`).
        UdpRcvMemory => "udp_rcv_memory",
        /// TCP segment sent to a broadcast address (RFC 1122 4.2.3.10).
        TcpBroadcast => "tcp_broadcast",
        /// TCP segment shorter than its fixed header.
        TcpTruncated => "tcp_truncated",
        /// TCP data offset below 5 or beyond the segment.
        TcpBadDataOffset => "tcp_bad_data_offset",
        /// TCP option with an impossible length.
        TcpBadOption => "tcp_bad_option",
        /// TCP checksum mismatch.
        TcpBadChecksum => "tcp_bad_checksum",
        /// TCP checksum field holds exactly the pseudo-header sum (see `UdpPartialChecksum`).
        TcpPartialChecksum => "tcp_partial_checksum",
        /// TCP source or destination port zero.
        TcpBadPort => "tcp_bad_port",
        /// No connection or listener: answered with RST (unless a RST).
        TcpNoSocket => "tcp_no_socket",
        /// RST to a listener (ignored, RFC 9293 3.10.7.2).
        TcpListenRst => "tcp_listen_rst",
        /// ACK to a listener that is no SYN cookie: answered with RST.
        TcpListenAck => "tcp_listen_ack",
        /// Segment not acceptable in the connection's state (e.g. no SYN in SYN-SENT).
        TcpStateDrop => "tcp_state_drop",
        /// Listener's accept queue full: SYN or final ACK dropped.
        TcpAcceptQueueFull => "tcp_accept_queue_full",
        /// Listener's SYN queue full and SYN cookies off.
        TcpSynQueueFull => "tcp_syn_queue_full",
        /// ACK to a listener with an invalid or expired SYN cookie.
        TcpBadCookie => "tcp_bad_cookie",
        /// Unacceptable ACK in SYN-SENT or SYN-RECEIVED (answered with RST).
        TcpBadAck => "tcp_bad_ack",
        /// RST in SYN-SENT without an acceptable ACK.
        TcpBadRst => "tcp_bad_rst",
        /// Segment outside the receive window (answered with an ACK).
        TcpBadSeq => "tcp_bad_seq",
        /// SYN on a synchronized connection (challenge ACK, RFC 5961 4).
        TcpSynInWindow => "tcp_syn_in_window",
        /// Segment without ACK on a synchronized connection.
        TcpNoAck => "tcp_no_ack",
        /// Old timestamp (PAWS, RFC 7323 5).
        TcpPaws => "tcp_paws",
        /// RST in the window but not at RCV.NXT (challenge ACK, RFC 5961 3).
        TcpRstInWindow => "tcp_rst_in_window",
        /// RST in TIME-WAIT, ignored (RFC 1337).
        TcpRstInTimeWait => "tcp_rst_in_time_wait",
        /// ACK of data never sent (RFC 5961 5).
        TcpAckUnsent => "tcp_ack_unsent",
        /// ACK older than SND.UNA - MAX.SND.WND (RFC 5961 5).
        TcpAckTooOld => "tcp_ack_too_old",
        /// Data after the peer's FIN.
        TcpDataAfterFin => "tcp_data_after_fin",
        /// Data already received (retransmission or duplicate).
        TcpDuplicateData => "tcp_duplicate_data",
        /// Data beyond the advertised window.
        TcpBeyondWindow => "tcp_beyond_window",
        /// Receive frame budget or pool reserve exhausted.
        TcpRcvMemory => "tcp_rcv_memory",
        /// Segment of a connection over its share of TCP memory under pressure, after its
        /// out-of-order queue was pruned and its small segments collapsed (Linux
        /// `TCPRcvQDrop` / `TCPOFODrop` under `tcp_mem`).
        TcpMemPressure => "tcp_mem_pressure",
        /// A TCP segment not built because it would have taken one of the pool's reserved free
        /// frames (`Stack::tcp_pool_reserve`: data below 1/16 of the pool free, control
        /// segments below 1/32); data is sent again later, a control segment by its timer or
        /// the next segment.
        TcpPoolReserve => "tcp_pool_reserve",
        /// ICMP error quoting a sequence number not in flight (RFC 5927).
        TcpIcmpBadSeq => "tcp_icmp_bad_seq",
        /// No route to the destination.
        NoRoute => "no_route",
        /// Queue of packets waiting for ARP resolution is full.
        ArpQueueFull => "arp_queue_full",
        /// ARP resolution failed; the packets waiting for it are dropped.
        ArpUnresolved => "arp_unresolved",
        /// Interface is down.
        LinkDown => "link_down",
        /// No frame left in the pool for an output packet.
        PoolEmpty => "pool_empty",
        /// Output packet larger than the MTU with DF set.
        NeedFragmentation => "need_fragmentation",
        /// Too many output frames pending for the driver.
        TxQueueFull => "tx_queue_full",
    }
}

reasons! {
    /// Packets and events that are not drops.
    Event {
        /// Frames received.
        RxFrames => "rx_frames",
        /// Bytes received (frame bytes).
        RxBytes => "rx_bytes",
        /// UDP/TCP packets with a partial checksum accepted (`rx_accept_partial_checksum`).
        RxPartialChecksumAccepted => "rx_partial_checksum_accepted",
        /// Frames handed to the driver.
        TxFrames => "tx_frames",
        /// Bytes handed to the driver.
        TxBytes => "tx_bytes",
        /// ARP requests answered.
        ArpRepliesSent => "arp_replies_sent",
        /// ARP requests sent (resolution and probes).
        ArpRequestsSent => "arp_requests_sent",
        /// Gratuitous ARPs sent.
        ArpGratuitousSent => "arp_gratuitous_sent",
        /// IPv4 packets delivered locally.
        Ipv4Delivered => "ipv4_delivered",
        /// Datagrams reassembled from fragments.
        FragReassembled => "frag_reassembled",
        /// Fragments created on output.
        FragCreated => "frag_created",
        /// Echo requests answered.
        IcmpEchoReplies => "icmp_echo_replies",
        /// Destination-unreachable messages sent.
        IcmpUnreachSent => "icmp_unreach_sent",
        /// Destination-unreachable messages suppressed by the rate limit.
        IcmpUnreachRateLimited => "icmp_unreach_rate_limited",
        /// ICMP errors delivered to a socket.
        IcmpErrorsDelivered => "icmp_errors_delivered",
        /// UDP datagrams delivered to a socket.
        UdpDelivered => "udp_delivered",
        /// UDP datagrams sent.
        UdpSent => "udp_sent",
        /// Configuration events applied.
        ConfigEvents => "config_events",
        /// Configured neighbours not stored because the table was full of permanent entries or
        /// entries with packets waiting.
        NeighborTableFull => "neighbor_table_full",
        /// TCP segments received.
        TcpSegsIn => "tcp_segs_in",
        /// TCP segments sent.
        TcpSegsOut => "tcp_segs_out",
        /// Connections opened by `tcp_connect`.
        TcpActiveOpens => "tcp_active_opens",
        /// SYNs accepted into a listener's SYN queue.
        TcpPassiveOpens => "tcp_passive_opens",
        /// Handshakes completed.
        TcpEstablished => "tcp_established",
        /// Connections reset by the peer.
        TcpResetsRecv => "tcp_resets_recv",
        /// RSTs sent.
        TcpResetsSent => "tcp_resets_sent",
        /// Challenge ACKs sent (RFC 5961).
        TcpChallengeAcks => "tcp_challenge_acks",
        /// Challenge ACKs not sent: the stack's per-second budget was spent (RFC 5961 7).
        TcpChallengeAcksLimited => "tcp_challenge_acks_limited",
        /// SYN-ACKs with a SYN cookie.
        TcpSynCookiesSent => "tcp_syncookies_sent",
        /// Connections opened from a valid SYN cookie.
        TcpSynCookiesOk => "tcp_syncookies_ok",
        /// TIME-WAIT connections reopened by a newer SYN (RFC 6191).
        TcpTimeWaitReused => "tcp_time_wait_reused",
        /// Fast retransmit / SACK recoveries entered.
        TcpFastRecoveries => "tcp_fast_recoveries",
        /// Segments retransmitted.
        TcpRetransSegs => "tcp_retrans_segs",
        /// Retransmission timeouts.
        TcpRtoExpirations => "tcp_rto_expirations",
        /// ACKs sent by the delayed-ACK timer.
        TcpDelayedAcks => "tcp_delayed_acks",
        /// Zero-window probes sent.
        TcpWindowProbes => "tcp_window_probes",
        /// Keepalive probes sent.
        TcpKeepaliveProbes => "tcp_keepalive_probes",
        /// Segments queued out of order.
        TcpOutOfOrder => "tcp_out_of_order",
        /// Payload bytes received in order (first arrival).
        TcpBytesReceived => "tcp_bytes_received",
        /// ICMP errors taken by a connection.
        TcpIcmpErrors => "tcp_icmp_errors",
        /// MSS lowered by ICMP fragmentation-needed.
        TcpPmtuUpdates => "tcp_pmtu_updates",
        /// MSS lowered after repeated RTOs (suspected path MTU black hole, RFC 4821 5.3).
        TcpMtuBlackholes => "tcp_mtu_blackholes",
        /// D-SACK blocks received (RFC 2883: the peer got a segment twice).
        TcpDsacksRecv => "tcp_dsacks_recv",
        /// D-SACK blocks sent.
        TcpDsacksSent => "tcp_dsacks_sent",
        /// Recoveries found spurious by D-SACK and undone (RFC 3708).
        TcpSpuriousUndos => "tcp_spurious_undos",
        /// Segments deemed lost by RACK's timer rather than on an ACK (RFC 8985).
        TcpRackTimeouts => "tcp_rack_timeouts",
        /// Tail loss probes sent (RFC 8985 7; Linux `TCPLossProbes`).
        TcpLossProbes => "tcp_loss_probes",
        /// Tail loss probes that repaired a loss, answered by a window reduction (RFC 8985
        /// 7.4; Linux `TCPLossProbeRecovery`).
        TcpLossProbeRecoveries => "tcp_loss_probe_recoveries",
        /// SACK blocks ignored: starting at or below the cumulative ACK without being a
        /// D-SACK, or covering data never sent (Linux `TCPSACKDiscard`).
        TcpSackDiscards => "tcp_sack_discards",
        /// Cumulative ACKs that stopped at SACKed data: the receiver reneged (RFC 2018 8;
        /// Linux `TCPSACKReneging`). The retransmission timer is shortened to clear the
        /// scoreboard.
        TcpSackReneging => "tcp_sack_reneging",
        /// Retransmission timeouts that cleared SACK marks (RFC 2018 8, RFC 6675 5.1).
        TcpSackScoreboardResets => "tcp_sack_scoreboard_resets",
        /// TCP memory pressure entered (Linux `TCPMemoryPressures`).
        TcpMemPressures => "tcp_mem_pressures",
        /// Out-of-order segments pruned, newest first, to bring a connection back within its
        /// memory share (Linux `OfoPruned`).
        TcpOfoPruned => "tcp_ofo_pruned",
        /// Out-of-order queues dropped because the connection made no progress for
        /// `tcp_ooo_timeout_ms`.
        TcpOfoTimeouts => "tcp_ofo_timeouts",
        /// Small received segments copied into the frame before them (Linux `TCPRcvCollapsed`).
        TcpRcvCollapsed => "tcp_rcv_collapsed",
        /// Small send-queue payloads copied into frames shared between entries.
        TcpSndCoalesced => "tcp_snd_coalesced",
        /// Connections reset because of memory: an orphan over its share under pressure, or a
        /// stalled connection over its share (Linux `TCPAbortOnMemory`).
        TcpAbortOnMemory => "tcp_abort_on_memory",
        /// Orphans reset because there were more than `tcp_max_orphans`.
        TcpTooManyOrphans => "tcp_too_many_orphans",
        /// Orphans dropped after `tcp_orphan_retries` unanswered retransmissions or probes.
        TcpOrphanTimeouts => "tcp_orphan_timeouts",
        /// Connections dropped by the user timeout (RFC 5482, Linux `TCP_USER_TIMEOUT`).
        TcpUserTimeouts => "tcp_user_timeouts",
        /// Orphaned FIN-WAIT-2 connections closed by `tcp_fin_timeout_ms`.
        TcpFinWait2Timeouts => "tcp_fin_wait2_timeouts",
        /// Connections dropped because the peer kept a zero window past the persist timeout.
        TcpPersistTimeouts => "tcp_persist_timeouts",
        /// Duplicate ACKs with a slightly old timestamp let through PAWS because they were
        /// only reordered (Linux `tcp_disordered_ack`).
        TcpPawsDisorderedAcks => "tcp_paws_disordered_acks",
    }
}

/// The counter array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    drops: [u64; DropReason::ALL.len()],
    events: [u64; Event::ALL.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::ALL.len()],
            events: [0; Event::ALL.len()],
        }
    }
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Counts `n` occurrences of an event.
    #[inline]
    pub fn add(&mut self, e: Event, n: u64) {
        self.events[e as usize] += n;
    }

    /// Drops counted for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Occurrences of `e`.
    pub fn get(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every non-zero counter as `(name, value)`: drops as `drop_<reason>`.
    pub fn nonzero(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let ev = Event::ALL
            .iter()
            .map(|e| (e.name().to_string(), self.get(*e)));
        let dr = DropReason::ALL
            .iter()
            .map(|r| (format!("drop_{}", r.name()), self.drops(*r)));
        ev.chain(dr).filter(|(_, v)| *v != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counted() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()));
        }
        for e in Event::ALL {
            assert!(seen.insert(e.name()));
        }
        let mut c = Counters::default();
        c.drop(DropReason::UdpNoSocket);
        c.add(Event::RxFrames, 3);
        let v: Vec<_> = c.nonzero().collect();
        assert_eq!(
            v,
            vec![("rx_frames".into(), 3), ("drop_udp_no_socket".into(), 1)]
        );
    }
}
