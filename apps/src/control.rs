//! The control socket: a UNIX stream socket where one request line (`stats`, `stats json`,
//! `ss`, `route`, `neigh`) gets one answer, then the connection closes. `cnet stats`, `cnet ss`,
//! `cnet route` and `cnet neigh` are its clients.

use crate::metrics::{snapshot, PortHandle, QueueSnapshot};
use cnet_stack::tcp::TcpInfo;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Errors of the control socket's client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached.
    #[error("cannot connect to the control socket {path}: {source} (is `cnet run` running with `control.socket` set?)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Sends one request line and returns the answer.
pub fn request(path: &Path, cmd: &str) -> Result<String, ControlError> {
    let mut s = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.write_all(format!("{cmd}\n").as_bytes()).map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(io)?;
    Ok(out)
}

/// `stats`: non-zero counters per port and queue, as a table.
pub fn stats_text(snaps: &[QueueSnapshot]) -> String {
    let mut out = String::new();
    for s in snaps {
        out.push_str(&format!(
            "{} ({}) queue {}: {}{}\n",
            s.port,
            s.iface,
            s.queue,
            if s.running { "running" } else { "stopped" },
            if s.synced { ", synced" } else { ", not synced" }
        ));
        if let Some(f) = &s.failure {
            out.push_str(&format!("  failed: {f}\n"));
        }
        if let Some(p) = &s.pool {
            out.push_str(&format!(
                "  {:<32} {} of {} free, {} held by the stack\n",
                "pool", p.free, p.capacity, s.frames_held
            ));
        }
        if let Some(c) = &s.counters {
            for (k, v) in c.nonzero() {
                out.push_str(&format!("  {k:<32} {v}\n"));
            }
        }
        for (k, v) in &s.runtime {
            if *v != 0 {
                out.push_str(&format!("  runtime_{k:<24} {v}\n"));
            }
        }
        for p in s.port_stats.iter().filter(|p| p.value != 0) {
            out.push_str(&format!("  port_{:<27} {}\n", p.name, p.value));
        }
    }
    out
}

/// `stats json`: every counter per port and queue, as JSON.
pub fn stats_json(snaps: &[QueueSnapshot]) -> serde_json::Value {
    let queues: Vec<_> = snaps
        .iter()
        .map(|s| {
            let counters: serde_json::Map<String, serde_json::Value> = s
                .counters
                .iter()
                .flat_map(|c| c.nonzero())
                .map(|(k, v)| (k, json!(v)))
                .collect();
            let runtime: serde_json::Map<String, serde_json::Value> =
                s.runtime.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            let port: serde_json::Map<String, serde_json::Value> = s
                .port_stats
                .iter()
                .map(|p| (p.name.to_string(), json!(p.value)))
                .collect();
            json!({
                "port": s.port,
                "iface": s.iface,
                "queue": s.queue,
                "running": s.running,
                "synced": s.synced,
                "failure": s.failure,
                "pool": s.pool.map(|p| json!({"capacity": p.capacity, "free": p.free, "alloc_failures": p.alloc_failures})),
                "frames_held": s.frames_held,
                "tcp_connections": s.tcp_connections,
                "counters": counters,
                "runtime": runtime,
                "port": port,
            })
        })
        .collect();
    json!({ "queues": queues })
}

/// One line of `ss` for a connection.
pub fn ss_line(port: &str, queue: u32, i: &TcpInfo) -> String {
    format!(
        "tcp {:<12} {:<21} {:<21} {}/{} rtt:{:.3}ms rto:{}ms cwnd:{} mss:{} sent:{} rcvd:{} retrans:{} unacked:{}",
        format!("{:?}", i.state),
        i.local,
        i.remote,
        port,
        queue,
        i.srtt.as_secs_f64() * 1e3,
        i.rto.as_millis(),
        i.cwnd,
        i.mss,
        i.bytes_acked,
        i.bytes_received,
        i.retransmits,
        i.unacked
    )
}

/// `ss`: UDP binds and TCP connections every queue's stack holds.
pub fn ss_text(ports: &[PortHandle]) -> String {
    let mut out = String::from(
        "proto state        local                 remote                port/queue details\n",
    );
    for p in ports {
        for (i, q) in p.queues.iter().enumerate() {
            let udp =
                p.rt.with_stack(i, |s, _| s.udp_sockets().collect::<Vec<_>>())
                    .unwrap_or_default();
            for (local, pending) in udp {
                out.push_str(&format!(
                    "udp {:<12} {:<21} {:<21} {}/{} queued:{pending}\n",
                    "Bound", local, "*:*", p.name, q
                ));
            }
            let listeners =
                p.rt.with_stack(i, |s, _| s.tcp_listeners().collect::<Vec<_>>())
                    .unwrap_or_default();
            for l in listeners {
                out.push_str(&format!(
                    "tcp {:<12} {:<21} {:<21} {}/{} accept_queue:{} backlog:{} syn_recv:{}\n",
                    "Listen", l.local, "*:*", p.name, q, l.accept_queue, l.backlog, l.syn_received
                ));
            }
            let infos =
                p.rt.with_stack(i, |s, _| {
                    let hs: Vec<_> = s.tcp_handles().collect();
                    hs.into_iter()
                        .filter_map(|h| s.tcp_info(h))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for info in infos {
                out.push_str(&ss_line(&p.name, *q, &info));
                out.push('\n');
            }
        }
    }
    out
}

/// `route`: each queue's routing table (the stack's own, learned and static).
pub fn route_text(ports: &[PortHandle]) -> String {
    let mut out = String::new();
    for p in ports {
        for (i, q) in p.queues.iter().enumerate() {
            out.push_str(&format!("{} ({}) queue {q}:\n", p.name, p.iface));
            let routes = p.rt.with_stack(i, |s, _| {
                let mut v: Vec<cnet_stack::Route> = s.routes().iter().copied().collect();
                v.sort_by_key(|r| (std::cmp::Reverse(r.prefix_len), u32::from(r.dst), r.metric));
                v
            });
            match routes {
                Ok(v) if v.is_empty() => out.push_str("  (no routes)\n"),
                Ok(v) => {
                    for r in v {
                        let via = r.gateway.map_or("link".to_string(), |g| format!("via {g}"));
                        out.push_str(&format!(
                            "  {}/{} {via} metric {}\n",
                            r.dst, r.prefix_len, r.metric
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("  unavailable: {e}\n")),
            }
        }
    }
    out
}

/// `neigh`: each queue's neighbour table (IP, MAC, state), like `ip neigh`.
pub fn neigh_text(ports: &[PortHandle]) -> String {
    let mut out = String::new();
    for p in ports {
        for (i, q) in p.queues.iter().enumerate() {
            out.push_str(&format!("{} ({}) queue {q}:\n", p.name, p.iface));
            let neigh = p.rt.with_stack(i, |s, _| {
                let mut v: Vec<_> = s
                    .neighbors()
                    .iter()
                    .map(|(ip, e)| (*ip, e.mac, e.state, e.queue.len()))
                    .collect();
                v.sort_by_key(|n| n.0);
                v
            });
            match neigh {
                Ok(v) if v.is_empty() => out.push_str("  (no neighbours)\n"),
                Ok(v) => {
                    for (ip, mac, state, queued) in v {
                        out.push_str(&format!("  {ip} lladdr {mac} {state:?} queued:{queued}\n"));
                    }
                }
                Err(e) => out.push_str(&format!("  unavailable: {e}\n")),
            }
        }
    }
    out
}

/// Answers one request line.
pub fn answer(cmd: &str, ports: &[PortHandle]) -> String {
    match cmd.trim() {
        "stats" => stats_text(&snapshot(ports)),
        "stats json" => {
            let mut s = stats_json(&snapshot(ports)).to_string();
            s.push('\n');
            s
        }
        "ss" => ss_text(ports),
        "route" => route_text(ports),
        "neigh" => neigh_text(ports),
        other => {
            format!("error: unknown command {other:?} (stats, stats json, ss, route, neigh)\n")
        }
    }
}

/// Serves the control socket at `path` from a thread until `stop` is set; the socket file is
/// removed when it stops. A stale socket file (no one listening) is replaced.
pub fn serve(
    path: &Path,
    ports: Arc<Vec<PortHandle>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("cnet-control".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                        let mut line = String::new();
                        let mut r = BufReader::new((&s).take(256));
                        if r.read_line(&mut line).is_ok() {
                            let _ = (&s).write_all(answer(&line, &ports).as_bytes());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        })
}
