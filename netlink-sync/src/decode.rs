//! IO-free decoding: netlink messages in, [`ConfigEvent`]s out.
//!
//! [`Decoder`] knows which interface it serves (by name; the ifindex is learnt) and folds every event
//! it emits into its own [`FoldedState`], so it emits only real changes and can answer a re-dump
//! with a minimal diff. It never touches a socket: the sync thread feeds it datagrams
//! ([`Decoder::decode_bytes`]) and dumps ([`Decoder::resync`]); tests and fuzz targets feed it bytes.
//!
//! # What is kept and what is ignored
//! - **Links**: only the served interface, found by name. `up` = `IFF_UP` and (`IFF_RUNNING` or
//!   `IFLA_OPERSTATE` = up): administratively up *and* with carrier. MTU from `IFLA_MTU`, MAC from
//!   `IFLA_ADDRESS` when it is 6 bytes (an interface without one reports `00:00:00:00:00:00` in
//!   [`ConfigEvent::Link`]). A rename away or `RTM_DELLINK` counts as removal: `Link { up: false }`
//!   and removal of every address, route and neighbour; a link that later appears under the name
//!   (new, or renamed to it) is adopted with a full re-dump ([`Resync::Snapshot`]).
//! - **Addresses**: `AF_INET` on the served interface; `IFA_LOCAL` (or `IFA_ADDRESS`) with the
//!   header's prefix length.
//! - **Routes**: `AF_INET`, type unicast only (local, broadcast, anycast, multicast, blackhole,
//!   unreachable, prohibit, throw and NAT routes are ignored: the stack cannot use them), not
//!   cloned (route-cache entries), in one of the configured tables (`RTA_TABLE` when present, else
//!   the header's table; main = 254 by default; table 255 (local) holds only local/broadcast
//!   entries, so it yields nothing even when named), and whose output interface is the served one.
//!   A multipath route counts when one of its next hops is on the served interface; the first
//!   such next hop gives the gateway (the stack does no ECMP). A next hop via an IPv6 gateway
//!   (`RTA_VIA`) is not usable and is skipped. Routes from several tables share one key space
//!   `(dst, prefix_len, metric)`: the later message wins.
//!   A route replaced (`NLM_F_REPLACE`) by one on another interface is removed.
//! - **Neighbours**: `AF_INET` on the served interface, proxy entries excluded. `PERMANENT` with a
//!   6-byte lladdr → `NeighborSet { permanent: true }`; `REACHABLE`, `STALE`, `DELAY`, `PROBE`
//!   with a lladdr → `NeighborSet { permanent: false }`; any other state (`INCOMPLETE`, `FAILED`,
//!   `NOARP`, `NONE`) or no lladdr → `NeighborDel` when the entry was known, nothing otherwise.
//!
//! # When a re-dump is needed
//! Linux does not notify everything: when a link goes down its IPv4 routes are flushed silently,
//! and removing an address silently drops routes that depended on it. The decoder therefore asks
//! for [`Resync::Diff`] after a change of `up` and after an address removal; the diff against its
//! state turns what was flushed into ordinary `RouteDel`s. A socket overrun (`ENOBUFS`) or the
//! adoption of a new link asks for [`Resync::Snapshot`].
//!
//! # Robustness
//! [`Decoder::decode_bytes`] accepts any bytes: framing is checked by hand before the message is
//! handed to `netlink-packet-route`, whose parse runs under `catch_unwind` as a second line of
//! defence; a bad message is counted in [`Decoded::malformed`] and skipped.

use std::net::{IpAddr, Ipv4Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use cnet_stack::config::InterfaceSnapshot;
use cnet_stack::{ConfigEvent, IfAddr, MacAddr, Neighbor, Route};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_REPLACE,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::state::{FoldedState, RouteKey};

/// Routing table `main`, the default of [`crate::SyncConfig::tables`].
pub const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// Length of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;

/// A re-dump the decoder asks its caller for. Ordered: `Snapshot` subsumes `Diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resync {
    /// Re-dump and emit the differences as ordinary events (after silent kernel flushes).
    Diff,
    /// Re-dump and emit one [`ConfigEvent::Snapshot`] (after an overrun or a new link).
    Snapshot,
}

/// What decoding some input produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    /// Events to deliver, in order. Each changed the decoder's state.
    pub events: Vec<ConfigEvent>,
    /// A re-dump to perform after delivering `events`, if any.
    pub resync: Option<Resync>,
    /// Messages skipped because they could not be framed or parsed.
    pub malformed: usize,
}

impl Decoded {
    fn request(&mut self, r: Resync) {
        self.resync = self.resync.max(Some(r));
    }
}

/// One framed netlink message: header fields and payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages. `Err(())` ends the iteration on bad framing.
pub(crate) fn frames(bytes: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, ()>> + '_ {
    let mut off = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || bytes.len().saturating_sub(off) < NLMSG_HDRLEN {
            return None;
        }
        let rest = &bytes[off..];
        let (Some(len), Some(ty), Some(flags), Some(seq)) = (
            ne_u32(rest, 0),
            ne_u16(rest, 4),
            ne_u16(rest, 6),
            ne_u32(rest, 8),
        ) else {
            failed = true;
            return Some(Err(()));
        };
        let len = len as usize;
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            failed = true;
            return Some(Err(()));
        };
        off = off.saturating_add((len + 3) & !3);
        Some(Ok(Frame {
            ty,
            flags,
            seq,
            payload,
        }))
    })
}

/// Parses the payload of an rtnetlink message of type `ty`, never panicking.
pub(crate) fn parse_rtnl(ty: u16, payload: &[u8]) -> Option<RouteNetlinkMessage> {
    match catch_unwind(AssertUnwindSafe(|| {
        RouteNetlinkMessage::parse_with_param(payload, ty)
    })) {
        Ok(Ok(msg)) => Some(msg),
        Ok(Err(e)) => {
            tracing::debug!(ty, error = %e, "undecodable rtnetlink message");
            None
        }
        Err(_) => {
            tracing::warn!(ty, "rtnetlink parser panicked; message skipped");
            None
        }
    }
}

/// Facts about a link taken from one `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index (namespace-local).
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: Option<String>,
    /// `IFLA_ADDRESS`, when it is a 6-byte MAC.
    pub mac: Option<MacAddr>,
    /// `IFLA_MTU`.
    pub mtu: Option<usize>,
    /// `IFF_UP` and (`IFF_RUNNING` or operstate up).
    pub up: bool,
}

/// Extracts [`LinkInfo`] from a link message.
pub fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: None,
        mac: None,
        mtu: None,
        up: false,
    };
    let mut oper_up = false;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = Some(n.clone()),
            LinkAttribute::Address(a) if a.len() == 6 => info.mac = Some(MacAddr::from_bytes(a)),
            LinkAttribute::Mtu(m) => info.mtu = Some(*m as usize),
            LinkAttribute::OperState(s) => oper_up = *s == State::Up,
            _ => {}
        }
    }
    let flags = msg.header.flags;
    info.up = flags.contains(LinkFlags::Up) && (flags.contains(LinkFlags::Running) || oper_up);
    info
}

/// The interface index and address of an `AF_INET` address message.
pub fn addr_of(msg: &AddressMessage) -> Option<(u32, IfAddr)> {
    if msg.header.family != AddressFamily::Inet || msg.header.prefix_len > 32 {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    let addr = local.or(address)?;
    Some((
        msg.header.index,
        IfAddr {
            addr,
            prefix_len: msg.header.prefix_len,
        },
    ))
}

/// How a route message relates to the served interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A usable IPv4 unicast route through the interface, in a configured table.
    Ours(Route),
    /// A unicast route of a configured table elsewhere (its key, to detect replacement).
    Elsewhere(RouteKey),
    /// Not relevant (other family, type, table, or a cached clone).
    Ignored,
}

fn v4(a: &RouteAddress) -> Option<Ipv4Addr> {
    match a {
        RouteAddress::Inet(a) => Some(*a),
        _ => None,
    }
}

/// Classifies a route message for interface `ifindex` and routing `tables`.
pub fn classify_route(msg: &RouteMessage, ifindex: u32, tables: &[u32]) -> RouteClass {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet
        || h.kind != RouteType::Unicast
        || h.flags.contains(RouteFlags::Cloned)
        || h.destination_prefix_length > 32
    {
        return RouteClass::Ignored;
    }
    let mut table = u32::from(h.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    let mut via_v6 = false;
    let mut multipath = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => match v4(a) {
                Some(a) => dst = a,
                None => return RouteClass::Ignored,
            },
            RouteAttribute::Gateway(a) => gateway = v4(a),
            RouteAttribute::Via(_) => via_v6 = true,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(m) => metric = *m,
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    if !tables.contains(&table) {
        return RouteClass::Ignored;
    }
    let prefix_len = h.destination_prefix_length;
    let key = (dst, prefix_len, metric);
    let mut ours = None;
    if oif == Some(ifindex) && !via_v6 {
        ours = Some(gateway);
    } else if let Some(hops) = multipath {
        for hop in hops.iter().filter(|h| h.interface_index == ifindex) {
            let mut gw = None;
            let mut v6 = false;
            for attr in &hop.attributes {
                match attr {
                    RouteAttribute::Gateway(a) => gw = v4(a),
                    RouteAttribute::Via(_) => v6 = true,
                    _ => {}
                }
            }
            if !v6 {
                ours = Some(gw);
                break;
            }
        }
    }
    match ours {
        Some(gateway) => RouteClass::Ours(Route {
            dst,
            prefix_len,
            gateway,
            metric,
        }),
        None => RouteClass::Elsewhere(key),
    }
}

/// What a neighbour message means for the served interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborClass {
    /// A usable entry.
    Set(Neighbor),
    /// The entry for this IP is not usable (or was deleted).
    Gone(Ipv4Addr),
    /// Not relevant (other family or interface, proxy entry).
    Ignored,
}

/// Classifies a neighbour message for interface `ifindex`; `deleted` for `RTM_DELNEIGH`.
pub fn classify_neighbor(msg: &NeighbourMessage, ifindex: u32, deleted: bool) -> NeighborClass {
    let h = &msg.header;
    if h.family != AddressFamily::Inet
        || h.ifindex != ifindex
        || h.flags.contains(NeighbourFlags::Proxy)
    {
        return NeighborClass::Ignored;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = Some(MacAddr::from_bytes(l))
            }
            _ => {}
        }
    }
    let Some(ip) = ip else {
        return NeighborClass::Ignored;
    };
    if deleted {
        return NeighborClass::Gone(ip);
    }
    let permanent = match h.state {
        NeighbourState::Permanent => true,
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe => false,
        _ => return NeighborClass::Gone(ip),
    };
    match mac {
        Some(mac) => NeighborClass::Set(Neighbor { ip, mac, permanent }),
        None => NeighborClass::Gone(ip),
    }
}

/// The result of a full dump: every link, and the IPv4 addresses, routes and neighbours.
#[derive(Debug, Default, Clone)]
pub struct Dump {
    /// `RTM_GETLINK` dump.
    pub links: Vec<LinkMessage>,
    /// `RTM_GETADDR` (`AF_INET`) dump.
    pub addrs: Vec<AddressMessage>,
    /// `RTM_GETROUTE` (`AF_INET`, all tables) dump.
    pub routes: Vec<RouteMessage>,
    /// `RTM_GETNEIGH` (`AF_INET`) dump.
    pub neighbors: Vec<NeighbourMessage>,
}

/// Turns netlink messages about one interface into [`ConfigEvent`]s. See the module docs.
#[derive(Debug, Clone)]
pub struct Decoder {
    ifname: String,
    ifindex: Option<u32>,
    tables: Vec<u32>,
    state: FoldedState,
}

impl Decoder {
    /// A decoder for the interface named `ifname`, keeping routes of `tables` (`RTA_TABLE` ids).
    /// It knows no ifindex until a link of that name is seen (message or dump).
    pub fn new(ifname: impl Into<String>, tables: Vec<u32>) -> Self {
        Decoder {
            ifname: ifname.into(),
            ifindex: None,
            tables,
            state: FoldedState::new(),
        }
    }

    /// The interface name served.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The current ifindex of the interface, `None` while it does not exist.
    pub fn ifindex(&self) -> Option<u32> {
        self.ifindex
    }

    /// The state folded from every event emitted so far.
    pub fn state(&self) -> &FoldedState {
        &self.state
    }

    /// Decodes a datagram of netlink messages. Never panics, whatever the bytes.
    pub fn decode_bytes(&mut self, bytes: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        for frame in frames(bytes) {
            let Ok(f) = frame else {
                out.malformed += 1;
                break;
            };
            match f.ty {
                NLMSG_NOOP | NLMSG_DONE | NLMSG_ERROR => {}
                NLMSG_OVERRUN => out.request(Resync::Snapshot),
                RTM_NEWLINK | RTM_DELLINK | RTM_NEWADDR | RTM_DELADDR | RTM_NEWROUTE
                | RTM_DELROUTE | RTM_NEWNEIGH | RTM_DELNEIGH => match parse_rtnl(f.ty, f.payload) {
                    Some(msg) => self.decode_into(f.flags, &msg, &mut out),
                    None => out.malformed += 1,
                },
                _ => {}
            }
        }
        out
    }

    /// Decodes one parsed message.
    pub fn decode(&mut self, msg: &NetlinkMessage<RouteNetlinkMessage>) -> Decoded {
        let mut out = Decoded::default();
        match &msg.payload {
            NetlinkPayload::InnerMessage(inner) => {
                self.decode_into(msg.header.flags, inner, &mut out)
            }
            NetlinkPayload::Overrun(_) => out.request(Resync::Snapshot),
            _ => {}
        }
        out
    }

    fn emit(&mut self, event: ConfigEvent, out: &mut Decoded) {
        if self.state.apply(&event) {
            out.events.push(event);
        }
    }

    fn decode_into(&mut self, nl_flags: u16, msg: &RouteNetlinkMessage, out: &mut Decoded) {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.new_link(m, out),
            RouteNetlinkMessage::DelLink(m) if Some(m.header.index) == self.ifindex => {
                tracing::info!(ifname = %self.ifname, "interface removed");
                self.lose(out);
            }
            RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
                let Some(idx) = self.ifindex else { return };
                let Some((i, a)) = addr_of(m) else { return };
                if i != idx {
                    return;
                }
                if matches!(msg, RouteNetlinkMessage::NewAddress(_)) {
                    self.emit(ConfigEvent::AddrAdd(a), out);
                } else {
                    let before = out.events.len();
                    self.emit(ConfigEvent::AddrDel(a), out);
                    if out.events.len() > before {
                        out.request(Resync::Diff);
                    }
                }
            }
            RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
                let Some(idx) = self.ifindex else { return };
                let new = matches!(msg, RouteNetlinkMessage::NewRoute(_));
                match classify_route(m, idx, &self.tables) {
                    RouteClass::Ours(r) if new => self.emit(ConfigEvent::RouteAdd(r), out),
                    RouteClass::Ours(r) => self.emit(ConfigEvent::RouteDel(r), out),
                    RouteClass::Elsewhere(key) if new && nl_flags & NLM_F_REPLACE != 0 => {
                        if let Some(old) = self.state.route(&key).copied() {
                            self.emit(ConfigEvent::RouteDel(old), out);
                        }
                    }
                    _ => {}
                }
            }
            RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                let Some(idx) = self.ifindex else { return };
                let deleted = matches!(msg, RouteNetlinkMessage::DelNeighbour(_));
                match classify_neighbor(m, idx, deleted) {
                    NeighborClass::Set(n) => self.emit(ConfigEvent::NeighborSet(n), out),
                    NeighborClass::Gone(ip) => self.emit(ConfigEvent::NeighborDel(ip), out),
                    NeighborClass::Ignored => {}
                }
            }
            _ => {}
        }
    }

    fn new_link(&mut self, m: &LinkMessage, out: &mut Decoded) {
        let li = link_info(m);
        let named_ours = li.name.as_deref() == Some(self.ifname.as_str());
        if Some(li.index) == self.ifindex {
            if li.name.is_some() && !named_ours {
                tracing::info!(ifname = %self.ifname, new = ?li.name, "interface renamed away");
                self.lose(out);
                return;
            }
            let was_up = self.state.up();
            let event = ConfigEvent::Link {
                up: li.up,
                mtu: li.mtu.or(self.state.mtu()).unwrap_or(0),
                mac: li.mac.or(self.state.mac()).unwrap_or(MacAddr([0; 6])),
            };
            self.emit(event, out);
            if was_up != li.up {
                out.request(Resync::Diff);
            }
        } else if named_ours {
            tracing::info!(ifname = %self.ifname, ifindex = li.index, "interface (re)appeared");
            self.ifindex = Some(li.index);
            out.request(Resync::Snapshot);
        }
    }

    /// The interface is gone (deleted or renamed away): link down, everything else removed.
    fn lose(&mut self, out: &mut Decoded) {
        self.ifindex = None;
        let target = self.state.clear_keep_link();
        for e in self.state.diff(&target) {
            self.emit(e, out);
        }
    }

    /// The ifindex and state a dump describes for the served interface.
    pub fn state_from_dump(&self, dump: &Dump) -> (Option<u32>, FoldedState) {
        let mut state = FoldedState::new();
        let Some(li) = dump
            .links
            .iter()
            .map(link_info)
            .find(|l| l.name.as_deref() == Some(self.ifname.as_str()))
        else {
            return (None, self.state.clear_keep_link());
        };
        let idx = li.index;
        state.set_link(li.up, li.mtu, li.mac);
        for (i, a) in dump.addrs.iter().filter_map(addr_of) {
            if i == idx {
                state.apply(&ConfigEvent::AddrAdd(a));
            }
        }
        for m in &dump.routes {
            if let RouteClass::Ours(r) = classify_route(m, idx, &self.tables) {
                state.apply(&ConfigEvent::RouteAdd(r));
            }
        }
        for m in &dump.neighbors {
            if let NeighborClass::Set(n) = classify_neighbor(m, idx, false) {
                state.apply(&ConfigEvent::NeighborSet(n));
            }
        }
        (Some(idx), state)
    }

    /// Adopts what a fresh dump says and returns the events that bring a subscriber there:
    /// one `Snapshot` for [`Resync::Snapshot`], the difference for [`Resync::Diff`].
    pub fn resync(&mut self, dump: &Dump, mode: Resync) -> Vec<ConfigEvent> {
        let (idx, target) = self.state_from_dump(dump);
        self.ifindex = idx;
        match mode {
            Resync::Snapshot => {
                self.state = target;
                vec![ConfigEvent::Snapshot(Box::new(self.state.snapshot()))]
            }
            Resync::Diff => {
                let events = self.state.diff(&target);
                for e in &events {
                    self.state.apply(e);
                }
                events
            }
        }
    }

    /// The current state as a snapshot.
    pub fn snapshot(&self) -> InterfaceSnapshot {
        self.state.snapshot()
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
