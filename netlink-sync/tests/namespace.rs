//! Tests against the Linux kernel inside network namespaces this test creates (root and iproute2
//! needed; skipped with a message otherwise). Every namespace is named `cnl-<pid>-<n>`, holds a
//! veth pair `v0`/`v1` with addresses from 198.18.0.0/15 only, and is deleted by a guard on every
//! exit path (deleting the namespace deletes its interfaces, addresses and routes).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cnet_netlink::{
    netns_path, ConfigEvent, FoldedState, NetlinkSync, Subscription, SyncConfig, SyncError,
};
use cnet_stack::{IfAddr, MacAddr, Neighbor, Route};

/// Longest wait for one expected event.
const EVENT_WAIT: Duration = Duration::from_secs(3);

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: netlink namespace tests need root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP: `ip` (iproute2) not found; apt-get install -y iproute2");
        return false;
    }
    true
}

/// A network namespace deleted on drop, with a veth pair v0 (ours, 198.18.0.2/24) and v1 (no
/// address, so that gateways in 198.18.0.0/24 resolve through v0 only), both up.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "cnl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns.ip("link add v0 type veth peer name v1");
        ns.ip("addr add 198.18.0.2/24 dev v0");
        ns.ip("link set v1 up");
        ns.ip("link set v0 up");
        ns
    }

    fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// Runs `ip -n NS ARGS`, panicking with its stderr on failure.
    fn ip(&self, args: &str) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ip_json(&self, args: &str) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-j", "-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(out.status.success(), "ip -j {args}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn start(&self) -> (NetlinkSync, cnet_netlink::InterfaceSnapshot) {
        let mut cfg = SyncConfig::new("v0");
        cfg.netns = Some(self.path());
        NetlinkSync::start(cfg).expect("netlink sync starts")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A subscriber with its folded state, and a cnet stack fed the same events (the stack's own tables
/// must end up equal to the kernel's too).
struct Follower {
    sub: Subscription,
    state: FoldedState,
    stack: cnet_stack::Stack,
}

impl Follower {
    fn new(sync: &NetlinkSync) -> Follower {
        let pool = cnet_stack::Pool::new(64, 2048, 192).expect("valid pool");
        let cfg = cnet_stack::StackConfig::new(cnet_stack::MacAddr([2, 0, 0, 0, 0, 1]));
        let mut f = Follower {
            sub: sync.subscribe(),
            state: FoldedState::new(),
            stack: cnet_stack::Stack::new(cfg, pool),
        };
        let first = f.sub.recv_timeout(EVENT_WAIT).expect("initial snapshot");
        assert!(matches!(first, ConfigEvent::Snapshot(_)), "{first:?}");
        f.apply(&first);
        f
    }

    fn apply(&mut self, ev: &ConfigEvent) {
        self.state.apply(ev);
        self.stack
            .apply_config(ev.clone(), cnet_stack::Instant::ZERO);
    }

    /// The stack's routing table, in the form `kernel_routes` gives.
    fn stack_routes(&self) -> BTreeSet<(Ipv4Addr, u8, Option<Ipv4Addr>, u32)> {
        self.stack
            .routes()
            .iter()
            .map(|r| (r.dst, r.prefix_len, r.gateway, r.metric))
            .collect()
    }

    /// Waits until an event satisfies `pred`; returns the time since `since`.
    fn wait(
        &mut self,
        since: Instant,
        what: &str,
        pred: impl Fn(&ConfigEvent) -> bool,
    ) -> Duration {
        let deadline = since + EVENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(ev) = self.sub.recv_timeout(left) else {
                panic!(
                    "no event for `{what}` within {EVENT_WAIT:?}; state: {:?}",
                    self.state
                );
            };
            self.apply(&ev);
            if pred(&ev) {
                return since.elapsed();
            }
        }
    }

    /// Applies events until `done(state)` holds, waiting at most `limit`.
    fn settle(&mut self, limit: Duration, done: impl Fn(&FoldedState) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let evs: Vec<ConfigEvent> = self.sub.drain().collect();
            for ev in &evs {
                self.apply(ev);
            }
            if done(&self.state) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(ev) = self.sub.recv_timeout(left.min(Duration::from_millis(50))) {
                self.apply(&ev);
            }
        }
    }
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn rt(dst: &str, len: u8, gw: Option<&str>, metric: u32) -> Route {
    Route {
        dst: ip4(dst),
        prefix_len: len,
        gateway: gw.map(ip4),
        metric,
    }
}

/// Unicast routes of `ip -j route show table main dev v0`.
fn kernel_routes(ns: &Netns) -> BTreeSet<(Ipv4Addr, u8, Option<Ipv4Addr>, u32)> {
    let v = ns.ip_json("route show table main dev v0");
    let mut out = BTreeSet::new();
    for e in v.as_array().unwrap() {
        if e.get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != "unicast")
        {
            continue;
        }
        let dst = e["dst"].as_str().unwrap();
        let (addr, len) = match dst {
            "default" => (Ipv4Addr::UNSPECIFIED, 0),
            d => match d.split_once('/') {
                Some((a, l)) => (ip4(a), l.parse().unwrap()),
                None => (ip4(d), 32),
            },
        };
        let gw = e.get("gateway").and_then(|g| g.as_str()).map(ip4);
        let metric = e.get("metric").and_then(|m| m.as_u64()).unwrap_or(0) as u32;
        out.insert((addr, len, gw, metric));
    }
    out
}

fn folded_routes(s: &FoldedState) -> BTreeSet<(Ipv4Addr, u8, Option<Ipv4Addr>, u32)> {
    s.routes()
        .map(|r| (r.dst, r.prefix_len, r.gateway, r.metric))
        .collect()
}

fn report(name: &str, delays: &mut [Duration]) {
    delays.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "propagation delay {name}: {} changes: min {:.0} µs, median {:.0} µs, max {:.0} µs",
        delays.len(),
        us(delays[0]),
        us(delays[delays.len() / 2]),
        us(delays[delays.len() - 1]),
    );
}

#[test]
fn initial_dump_uses_preconfigured_state() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.ip("route add 198.19.1.0/24 via 198.18.0.1 dev v0 metric 7");
    ns.ip("neigh add 198.18.0.9 lladdr 02:00:00:00:00:09 dev v0 nud permanent");
    ns.ip("link set v0 mtu 1450");
    let (sync, snap) = ns.start();
    assert!(snap.up, "{snap:?}");
    assert_eq!(snap.mtu, Some(1450));
    assert!(snap.mac.is_some());
    assert_eq!(
        snap.addrs,
        vec![IfAddr {
            addr: ip4("198.18.0.2"),
            prefix_len: 24
        }]
    );
    assert!(snap
        .routes
        .contains(&rt("198.19.1.0", 24, Some("198.18.0.1"), 7)));
    assert!(snap.routes.contains(&rt("198.18.0.0", 24, None, 0)));
    assert!(snap.neighbors.contains(&Neighbor {
        ip: ip4("198.18.0.9"),
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
        permanent: true
    }));
    assert_eq!(folded_routes(&sync.state()), kernel_routes(&ns));
    sync.stop();
}

#[test]
fn missing_interface_is_a_clear_error() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let mut cfg = SyncConfig::new("nope0");
    cfg.netns = Some(ns.path());
    match NetlinkSync::start(cfg) {
        Err(e @ SyncError::NoSuchInterface(_)) => {
            assert!(e.to_string().contains("nope0"), "{e}");
        }
        other => panic!("expected NoSuchInterface, got {other:?}"),
    }
}

#[test]
fn live_changes_arrive_quickly() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let (sync, _) = ns.start();
    let mut f = Follower::new(&sync);
    let mut second = Follower::new(&sync);
    let mut delays = Vec::new();
    let mut from_start = Vec::new();
    let mut step = |f: &mut Follower, cmd: &str, pred: &dyn Fn(&ConfigEvent) -> bool| {
        let started = Instant::now();
        ns.ip(cmd);
        let returned = Instant::now();
        let d = f.wait(returned, cmd, pred);
        delays.push(d);
        from_start.push(d + (returned - started));
    };
    let a = IfAddr {
        addr: ip4("198.18.2.2"),
        prefix_len: 24,
    };
    step(&mut f, "addr add 198.18.2.2/24 dev v0", &|e| {
        *e == ConfigEvent::AddrAdd(a)
    });
    step(&mut f, "addr del 198.18.2.2/24 dev v0", &|e| {
        *e == ConfigEvent::AddrDel(a)
    });
    let direct = rt("198.19.2.0", 24, None, 0);
    step(&mut f, "route add 198.19.2.0/24 dev v0", &|e| {
        *e == ConfigEvent::RouteAdd(direct)
    });
    let gw = rt("198.19.3.0", 24, Some("198.18.0.1"), 20);
    step(
        &mut f,
        "route add 198.19.3.0/24 via 198.18.0.1 dev v0 metric 20",
        &|e| *e == ConfigEvent::RouteAdd(gw),
    );
    let gw2 = rt("198.19.3.0", 24, Some("198.18.0.3"), 20);
    step(
        &mut f,
        "route replace 198.19.3.0/24 via 198.18.0.3 dev v0 metric 20",
        &|e| *e == ConfigEvent::RouteAdd(gw2),
    );
    let dflt = rt("0.0.0.0", 0, Some("198.18.0.1"), 0);
    step(&mut f, "route add default via 198.18.0.1", &|e| {
        *e == ConfigEvent::RouteAdd(dflt)
    });
    step(&mut f, "route del 198.19.3.0/24 metric 20", &|e| {
        *e == ConfigEvent::RouteDel(gw2)
    });
    step(&mut f, "route del 198.19.2.0/24 dev v0", &|e| {
        *e == ConfigEvent::RouteDel(direct)
    });
    let n = |mac: u8, permanent| Neighbor {
        ip: ip4("198.18.0.20"),
        mac: MacAddr([2, 0, 0, 0, 0, mac]),
        permanent,
    };
    step(
        &mut f,
        "neigh add 198.18.0.20 lladdr 02:00:00:00:00:20 dev v0 nud permanent",
        &|e| *e == ConfigEvent::NeighborSet(n(0x20, true)),
    );
    step(
        &mut f,
        "neigh change 198.18.0.20 lladdr 02:00:00:00:00:21 dev v0 nud reachable",
        &|e| *e == ConfigEvent::NeighborSet(n(0x21, false)),
    );
    step(&mut f, "neigh del 198.18.0.20 dev v0", &|e| {
        *e == ConfigEvent::NeighborDel(ip4("198.18.0.20"))
    });
    step(&mut f, "link set v0 mtu 1400", &|e| {
        matches!(
            e,
            ConfigEvent::Link {
                up: true,
                mtu: 1400,
                ..
            }
        )
    });
    step(&mut f, "link set v0 down", &|e| {
        matches!(e, ConfigEvent::Link { up: false, .. })
    });
    // Linux flushes the interface's routes silently on down; the re-dump reports them removed.
    assert!(
        f.settle(EVENT_WAIT, |s| s.routes().count() == 0),
        "routes left after link down: {:?}",
        f.state
    );
    step(&mut f, "link set v0 up", &|e| {
        matches!(e, ConfigEvent::Link { up: true, .. })
    });
    let connected = rt("198.18.0.0", 24, None, 0);
    assert!(f.settle(EVENT_WAIT, |s| s.route(&(connected.dst, 24, 0)).is_some()));
    report("from `ip` return", &mut delays);
    report(
        "from `ip` spawn (upper bound, includes running `ip`)",
        &mut from_start,
    );

    // Both subscribers, the sync's own state and the kernel agree.
    assert!(second.settle(EVENT_WAIT, |s| *s == f.state));
    assert_eq!(sync.state(), f.state);
    assert_eq!(folded_routes(&f.state), kernel_routes(&ns));
    assert_eq!(f.state.mtu(), Some(1400));
    sync.stop();
    assert!(f.sub.is_closed(), "stop ends every subscription");
}

#[test]
fn rename_and_recreate() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let (sync, _) = ns.start();
    let mut f = Follower::new(&sync);
    let old_index = sync.ifindex().unwrap();

    // Renamed away: like removal.
    ns.ip("link set v0 down");
    ns.ip("link set v0 name v9");
    assert!(f.settle(EVENT_WAIT, |s| !s.up()
        && s.addrs().count() == 0
        && s.routes().count() == 0));
    assert_eq!(sync.ifindex(), None);
    // Renamed back: adopted with a snapshot.
    ns.ip("link set v9 name v0");
    let t = Instant::now();
    f.wait(t, "snapshot after rename back", |e| {
        matches!(e, ConfigEvent::Snapshot(_))
    });
    assert_eq!(sync.ifindex(), Some(old_index));
    ns.ip("link set v0 up");
    f.wait(Instant::now(), "up", |e| {
        matches!(e, ConfigEvent::Link { up: true, .. })
    });
    assert!(f.settle(EVENT_WAIT, |s| s.addrs().count() == 1));

    // Deleted, then recreated under the same name.
    ns.ip("link del v0");
    assert!(f.settle(EVENT_WAIT, |s| !s.up() && s.addrs().count() == 0));
    assert_eq!(sync.ifindex(), None);
    ns.ip("link add v0 type veth peer name v1");
    f.wait(Instant::now(), "snapshot after recreate", |e| {
        matches!(e, ConfigEvent::Snapshot(_))
    });
    assert!(sync.ifindex().is_some());
    ns.ip("addr add 198.18.4.2/24 dev v0");
    ns.ip("link set v1 up");
    ns.ip("link set v0 up");
    assert!(f.settle(EVENT_WAIT, |s| s.up()
        && s.addrs().any(|a| a.addr == ip4("198.18.4.2"))
        && s.route(&(ip4("198.18.4.0"), 24, 0)).is_some()));
    assert_eq!(folded_routes(&f.state), kernel_routes(&ns));
}

#[test]
fn stress_10k_route_adds_and_deletes() {
    if !can_run() {
        return;
    }
    const N: u32 = 10_000;
    let ns = Netns::new();
    let (sync, _) = ns.start();
    let mut f = Follower::new(&sync);
    let dir = std::env::temp_dir();
    let add = dir.join(format!("{}-add.batch", ns.name));
    let del = dir.join(format!("{}-del.batch", ns.name));
    let mut adds = String::new();
    let mut dels = String::new();
    for i in 0..N {
        let dst = format!("198.19.{}.{}/32", i / 256, i % 256);
        // A third of them via a gateway with a metric, the rest directly connected.
        let tail = if i % 3 == 0 {
            "via 198.18.0.1 dev v0 metric 9"
        } else {
            "dev v0"
        };
        adds.push_str(&format!("route add {dst} {tail}\n"));
        dels.push_str(&format!("route del {dst} {tail}\n"));
    }
    std::fs::write(&add, adds).unwrap();
    std::fs::write(&del, dels).unwrap();
    let base = f.state.routes().count();

    let t = Instant::now();
    ns.ip(&format!("-batch {}", add.display()));
    let ip_took = t.elapsed();
    let all = f.settle(Duration::from_secs(20), |s| {
        s.routes().count() == base + N as usize
    });
    let synced = t.elapsed();
    assert!(
        all,
        "only {} of {} routes arrived",
        f.state.routes().count() - base,
        N
    );
    assert_eq!(folded_routes(&f.state), kernel_routes(&ns));
    assert_eq!(
        f.stack_routes(),
        kernel_routes(&ns),
        "the stack's table equals the kernel's"
    );
    println!(
        "stress: {N} route adds: ip -batch took {ip_took:?}, table in sync {synced:?} after start"
    );

    let t = Instant::now();
    ns.ip(&format!("-batch {}", del.display()));
    let ip_took = t.elapsed();
    let all = f.settle(Duration::from_secs(20), |s| s.routes().count() == base);
    let synced = t.elapsed();
    assert!(all, "{} routes left", f.state.routes().count() - base);
    assert_eq!(folded_routes(&f.state), kernel_routes(&ns));
    assert_eq!(
        f.stack_routes(),
        kernel_routes(&ns),
        "the stack's table equals the kernel's"
    );
    assert_eq!(sync.state(), f.state);
    println!(
        "stress: {N} route deletes: ip -batch took {ip_took:?}, table in sync {synced:?} after start"
    );
    let _ = std::fs::remove_file(add);
    let _ = std::fs::remove_file(del);
}

#[test]
fn overrun_triggers_snapshot_redump() {
    if !can_run() {
        return;
    }
    const N: u32 = 5_000;
    let ns = Netns::new();
    let mut cfg = SyncConfig::new("v0");
    cfg.netns = Some(ns.path());
    // The smallest buffer the kernel allows: a burst of notifications must overrun it.
    cfg.rcvbuf = 1;
    let (sync, _) = NetlinkSync::start(cfg).expect("netlink sync starts");
    let mut f = Follower::new(&sync);
    let file = std::env::temp_dir().join(format!("{}-overrun.batch", ns.name));
    let base = f.state.routes().count();
    let mut snapshots = 0;
    let mut added = 0usize;
    // Whether a burst overruns the buffer depends on how the netlink thread is scheduled: try a
    // few bursts until one does (a loaded CI machine may keep up with the first).
    for round in 0..6u32 {
        let mut adds = String::new();
        for i in 0..N {
            adds.push_str(&format!(
                "route add 198.19.{}.{}/32 dev v0\n",
                round * 20 + i / 256,
                i % 256
            ));
        }
        std::fs::write(&file, adds).unwrap();
        ns.ip(&format!("-batch {}", file.display()));
        added += N as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while f.state.routes().count() != base + added && Instant::now() < deadline {
            if let Some(ev) = f.sub.recv_timeout(Duration::from_millis(50)) {
                snapshots += usize::from(matches!(ev, ConfigEvent::Snapshot(_)));
                f.apply(&ev);
            }
        }
        if snapshots > 0 {
            break;
        }
    }
    let _ = std::fs::remove_file(&file);
    println!(
        "overrun: {snapshots} snapshot re-dump(s) while adding {added} routes with a minimal buffer"
    );
    assert!(snapshots > 0, "expected ENOBUFS and a re-dump");
    assert_eq!(folded_routes(&f.state), kernel_routes(&ns));
    assert_eq!(
        f.stack_routes(),
        kernel_routes(&ns),
        "the stack resynchronised too"
    );
    assert_eq!(sync.state(), f.state);
}
