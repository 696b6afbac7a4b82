//! `cnet run` as an unprivileged process, the way it runs in a pod (issue #16): uid/gid 65534, no
//! supplementary groups, and only CAP_NET_RAW + CAP_IPC_LOCK (effective, permitted, inheritable,
//! ambient and bounding set: `setpriv`). The test itself needs root to set up, and skips with a
//! message otherwise: it creates the two-namespace veth lab (198.18.0.0/15, removed on drop),
//! loads and attaches libxdp's redirect program in the stack namespace ([`XskProgram`]) and then
//! plays the privileged side in one of two ways:
//!
//! - `pinned`: pins the XSKMAP in a bpffs it mounts on a temp dir (as the device plugin's
//!   pinning pool or bpfman's CSI driver do), and cnet opens it with `xskmap: {"pinned": ...}`;
//! - `uds`: serves the device plugin's handshake (shared/afxdp-dp-protocol.md) on a UNIX socket,
//!   handing the map fd over with SCM_RIGHTS; cnet runs with `AFXDP_DEVICES_CNETTEST=cnet0` and
//!   `xskmap: {"uds": ...}` and `busy_poll`, which goes through the plugin: `/config_busy_poll`
//!   with the queue's socket, on which the test (as root, like the plugin) sets the options and
//!   reads them back; the test checks the exact requests it got.
//!
//! In both, the kernel namespace pings the stack, runs a UDP echo and a TCP echo, and the test
//! checks that the service process really ran as uid 65534 with exactly those two capabilities.

use cnet_apps::deviceplugin::{self, wire};
use cnet_apps::lab::{self, Lab};
use cnet_drivers::xdp::XskProgram;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CNET: &str = env!("CARGO_BIN_EXE_cnet");

/// The unprivileged user the service runs as (`nobody`).
const NOBODY: u32 = 65534;

/// CAP_NET_RAW (13) and CAP_IPC_LOCK (14): the capability mask the service must end up with.
const CAPS: u64 = (1 << 13) | (1 << 14);

/// `setpriv` arguments: drop to [`NOBODY`] keeping only CAP_NET_RAW and CAP_IPC_LOCK (ambient, so
/// they survive the exec of a non-setuid binary; the bounding set loses everything else).
const SETPRIV: [&str; 7] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all,+net_raw,+ipc_lock",
    "--ambient-caps=-all,+net_raw,+ipc_lock",
    "--bounding-set=-all,+net_raw,+ipc_lock",
];

fn skip(name: &str) -> bool {
    if let Some(why) = lab::missing_requirements() {
        eprintln!("SKIPPED {name} (the setup needs root and AF_XDP): {why}");
        return true;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED {name}: no setpriv (util-linux)");
        return true;
    }
    false
}

/// A temp dir everyone can traverse, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("cnet-unpriv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.join("bpffs")).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the privileged side hands the XSKMAP over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Handover {
    Pinned,
    Uds,
}

/// The privileged side: a thread inside the stack namespace that owns the XDP program (so that
/// detaching on drop happens in the right namespace) and, for [`Handover::Uds`], serves one
/// device-plugin session. It ends when told to, or after 120 s.
struct Plugin {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Plugin {
    /// Starts it; returns once the map is pinned or the socket listens.
    fn start(lab: &Lab, how: Handover, at: PathBuf) -> Plugin {
        let ns = std::fs::File::open(lab.stack_ns_path()).expect("stack namespace");
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on an open namespace file; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = ready_tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
                return Vec::new();
            }
            let mut prog = match XskProgram::load(lab::STACK_DEV) {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("loading the XDP program: {e}")));
                    return Vec::new();
                }
            };
            let mut log = Vec::new();
            match how {
                Handover::Pinned => {
                    let r = prog.pin(&at).map_err(|e| e.to_string()).and_then(|()| {
                        // The pinning pool's `uid` ACL / bpfman's fsGroup: the service's user may
                        // open it read-write.
                        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o666))
                            .map_err(|e| e.to_string())
                    });
                    let _ = ready_tx.send(r);
                }
                Handover::Uds => {
                    let listener = match wire::listen(&at).and_then(|l| {
                        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o777))?;
                        wire::set_timeouts(l.as_fd(), Duration::from_secs(30))?;
                        Ok(l)
                    }) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("listen: {e}")));
                            return Vec::new();
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    if let Ok(conn) = wire::accept(listener.as_fd()) {
                        let _ = wire::set_timeouts(conn.as_fd(), Duration::from_secs(10));
                        serve(&conn, prog.map_fd(), &mut log);
                    }
                    drop(listener);
                    let _ = std::fs::remove_file(&at);
                }
            }
            let _ = stop_rx.recv_timeout(Duration::from_secs(120));
            drop(prog);
            log
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("privileged side: {e}"),
            Err(e) => panic!("privileged side did not start: {e}"),
        }
        Plugin {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it (detaching the program) and returns the requests it served.
    fn finish(mut self) -> Vec<String> {
        let _ = self.stop.send(());
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One device-plugin session as the plugin serves it (§5), for the device [`lab::STACK_DEV`]:
/// every request is logged (`+fd` when one came with it); at most 16 requests.
fn serve(conn: &OwnedFd, map: std::os::fd::BorrowedFd<'_>, log: &mut Vec<String>) {
    let reply = |s: &str| {
        let _ = wire::send(conn.as_fd(), s.as_bytes(), None);
    };
    for _ in 0..16 {
        let mut buf = [0u8; 64];
        let Ok(m) = wire::recv(conn.as_fd(), &mut buf) else {
            return;
        };
        if m.len == 0 {
            return;
        }
        let req = String::from_utf8_lossy(&buf[..m.len.min(64)]).into_owned();
        log.push(format!(
            "{req}{}",
            if m.fds.is_empty() { "" } else { " +fd" }
        ));
        if log.len() == 1 {
            if req.starts_with("/connect,") {
                reply("/host_ok");
                continue;
            }
            return;
        }
        if req == format!("/xsk_map_fd,{}", lab::STACK_DEV) {
            let _ = wire::send(conn.as_fd(), b"/fd_ack", Some(map));
        } else if req.starts_with("/xsk_map_fd") {
            reply("/fd_nak");
        } else if let Some(args) = req.strip_prefix("/config_busy_poll,") {
            // As the plugin: the options on the received socket, as root; then read back.
            match (m.fds.first(), args.split_once(',')) {
                (Some(xsk), Some((t, b))) => {
                    let (t, b) = (t.parse().unwrap_or(-1), b.parse().unwrap_or(-1));
                    let set = [
                        (SO_PREFER_BUSY_POLL, 1),
                        (SO_BUSY_POLL, t),
                        (SO_BUSY_POLL_BUDGET, b),
                    ];
                    let ok = set.iter().all(|(o, v)| setsockopt(xsk.as_fd(), *o, *v));
                    // (SO_BUSY_POLL_BUDGET cannot be read back with getsockopt.)
                    let got: Vec<String> = set[..2]
                        .iter()
                        .map(|(o, _)| {
                            getsockopt(xsk.as_fd(), *o).map_or("?".into(), |v| v.to_string())
                        })
                        .collect();
                    log.push(format!("set {ok}, read back {}", got.join(" ")));
                    reply(if ok {
                        "/config_busy_poll_ack"
                    } else {
                        "/config_busy_poll_nak"
                    });
                }
                _ => reply("/config_busy_poll_nak"),
            }
        } else if req == "/version" {
            reply("0.1");
        } else if req == "/fin" {
            reply("/fin_ack");
            return;
        } else {
            reply("/nak");
        }
    }
}

const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

fn setsockopt(fd: std::os::fd::BorrowedFd<'_>, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: an int option of an open socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn getsockopt(fd: std::os::fd::BorrowedFd<'_>, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int option of an open socket, into a local of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

/// The service, killed on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cnet run --config cfg` in the stack namespace through [`SETPRIV`], stderr to `log`.
fn start_unprivileged(lab: &Lab, cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Service {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.stack_ns])
        .args(SETPRIV)
        .args([CNET, "run", "--config"])
        .arg(cfg)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Service(cmd.spawn().expect("ip netns exec setpriv cnet"))
}

/// Polls `f` every 100 ms for up to `timeout`.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/readyz` of the service, from inside the stack namespace.
fn readyz(lab: &Lab) -> bool {
    lab.exec(
        &lab.stack_ns,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "2",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9464/readyz",
        ],
    )
    .is_ok_and(|o| o.stdout == b"200")
}

/// The `Uid:` and `CapEff:`/`CapPrm:`/`CapBnd:`/`CapAmb:` lines of a process.
fn creds(pid: u32) -> (String, Vec<(String, u64)>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mut uid = String::new();
    let mut caps = Vec::new();
    for l in status.lines() {
        if let Some(v) = l.strip_prefix("Uid:") {
            uid = v.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        for k in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
            if let Some(v) = l.strip_prefix(k) {
                caps.push((k.into(), u64::from_str_radix(v.trim(), 16).unwrap()));
            }
        }
    }
    (uid, caps)
}

/// Ping, UDP echo and TCP echo from the kernel namespace to the stack.
fn check_traffic(lab: &Lab, logs: &dyn Fn() -> String) {
    let ip = lab::STACK_IP.to_string();
    let ping = lab.kernel(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip]);
    assert!(ping.is_ok(), "ping: {ping:?}\n{}", logs());
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(0.5)\nk=0\n\
         for i in range(20):\n  s.sendto(b'u%d'%i,('{ip}',7))\n  try:\n    d,_=s.recvfrom(100)\n    k+=d==b'u%d'%i\n  except socket.timeout:\n    pass\n\
         print(k, flush=True)\n\
         c=socket.create_connection(('{ip}',7),timeout=3)\nc.sendall(b'hello tcp')\nd=b''\n\
         while len(d)<9:\n  b=c.recv(9-len(d))\n  if not b: break\n  d+=b\nc.close()\nprint(d.decode())\n"
    );
    let out = lab
        .kernel(&["python3", "-c", &script])
        .unwrap_or_else(|e| panic!("echo from the kernel side: {e}\n{}", logs()));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (udp, tcp) = text.split_once('\n').unwrap_or((&text, ""));
    let udp: u32 = udp.parse().unwrap_or(0);
    assert!(udp >= 18, "{udp} of 20 UDP datagrams echoed\n{}", logs());
    assert_eq!(tcp, "hello tcp", "TCP echo\n{}", logs());
}

/// The whole run for one way of handing the map over.
fn run_unprivileged(how: Handover) {
    let tag = match how {
        Handover::Pinned => "pin",
        Handover::Uds => "uds",
    };
    let lab = Lab::new(&format!("cu{tag}"), 1).expect("lab");
    let dir = TempDir::new(tag);
    let (at, xskmap, env): (PathBuf, String, Vec<(&str, &str)>) = match how {
        Handover::Pinned => {
            let fs = dir.0.join("bpffs");
            std::fs::create_dir_all(&fs).unwrap();
            lab::run(&["mount", "-t", "bpf", "bpf", fs.to_str().unwrap()]).expect("mount bpffs");
            std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(0o755)).unwrap();
            let pin = fs.join("xsks_map");
            let x = format!(r#"{{ "pinned": "{}" }}"#, pin.display());
            (pin, x, vec![])
        }
        Handover::Uds => {
            let sock = dir.0.join("afxdp.sock");
            // Busy polling goes through the plugin (the service may not set it).
            let x = format!(
                r#"{{ "uds": "{}" }}, "busy_poll": {{ "timeout_us": 20, "budget": 16 }}"#,
                sock.display()
            );
            (sock, x, vec![("AFXDP_DEVICES_CNETTEST", lab::STACK_DEV)])
        }
    };
    let plugin = Plugin::start(&lab, how, at.clone());
    let cfg = dir.0.join("cnet.jsonc");
    std::fs::write(
        &cfg,
        format!(
            r#"{{
  // unprivileged service test ({tag})
  "pools": {{ "default": {{ "frames": 4096, "huge_pages": "never" }} }},
  "defaults": {{ "pool": "default" }},
  "ports": {{ "p0": {{ "interface": "{dev}", "queues": [0], "bind": "copy", "xskmap": {xskmap} }} }},
  "apps": {{ "udp_echo": {{ "port": 7 }}, "tcp_echo": {{ "port": 7 }} }},
  "metrics": {{ "listen": "127.0.0.1:9464" }},
}}"#,
            dev = lab::STACK_DEV,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.0.join("stderr.log");
    let mut svc = start_unprivileged(&lab, &cfg, &log, &env);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("/readyz 200", Duration::from_secs(20), || {
        assert!(
            svc.0.try_wait().unwrap().is_none(),
            "cnet run exited:\n{}",
            logs()
        );
        readyz(&lab)
    });
    // `ip netns exec` and `setpriv` exec in place: the child is the service itself.
    let (uid, caps) = creds(svc.0.id());
    let nobody = NOBODY.to_string();
    assert_eq!(
        uid,
        [nobody.as_str(); 4].join(" "),
        "real/effective/saved/fs uid"
    );
    for (k, v) in &caps {
        assert_eq!(*v, CAPS, "{k} {v:#x}: only CAP_NET_RAW and CAP_IPC_LOCK");
    }
    assert_eq!(caps.len(), 4);
    check_traffic(&lab, &logs);

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(svc.0.id() as i32, libc::SIGTERM) };
    let mut status = None;
    wait_for(
        "cnet run to stop on SIGTERM",
        Duration::from_secs(10),
        || {
            status = svc.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success(), "{}", logs());
    let requests = plugin.finish();
    if how == Handover::Uds {
        let host = deviceplugin::hostname().unwrap();
        assert_eq!(
            requests,
            [
                format!("/connect,{host}"),
                "/version".into(),
                format!("/xsk_map_fd,{}", lab::STACK_DEV),
                "/config_busy_poll,20,16 +fd".into(),
                "set true, read back 1 20".into(),
                "/fin".into(),
            ]
        );
    }
}

#[test]
fn unprivileged_service_over_a_pinned_xskmap() {
    if skip("unprivileged_service_over_a_pinned_xskmap") {
        return;
    }
    run_unprivileged(Handover::Pinned);
}

#[test]
fn unprivileged_service_over_the_device_plugin_socket() {
    if skip("unprivileged_service_over_the_device_plugin_socket") {
        return;
    }
    run_unprivileged(Handover::Uds);
}
