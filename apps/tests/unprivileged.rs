//! `cnet run` as an unprivileged process, the way it runs in a pod (issue #16): uid/gid 65534, no
//! supplementary groups, and only CAP_NET_RAW + CAP_IPC_LOCK (effective, permitted, inheritable,
//! ambient and bounding set: `setpriv`). The test itself needs root to set up, and skips with a
//! message otherwise: it creates the two-namespace veth lab (198.18.0.0/15, removed on drop) and
//! runs the test device plugin, `afxdp-test-dp` (apps/src/bin/afxdp-test-dp), as root on the
//! host side: it loads libxdp's redirect program in the stack namespace and hands the XSKMAP
//! over as the AF_XDP device plugin does (shared/afxdp-dp-protocol.md), owned by uid 65534 as
//! the pool's `uid`:
//!
//! - `pinned`: a pinning pool: the map pinned on a bpffs the plugin mounts, bind-mounted at
//!   `<dir>/cnet0/xsks_map`; cnet opens it with `xskmap: {"pinned": ...}`;
//! - `uds`: the plugin's handshake on `<dir>/cnet0/afxdp.sock`, the map fd by SCM_RIGHTS; cnet
//!   runs with `AFXDP_DEVICES_CNETTEST=cnet0`, `xskmap: {"uds": ...}` and `busy_poll`, which goes
//!   through the plugin: `/config_busy_poll` with the queue's socket, on which the plugin (root)
//!   sets the options and reads them back; the test checks the exact requests it got, then that
//!   a second `cnet run` (a restarted container) fails cleanly: the session was used;
//! - `pinned` with the socket beside the pin (a pool with both UDS and pinning): the map from the
//!   pin, busy polling through a session that asks for no map.
//!
//! In all three, the kernel namespace pings the stack, runs a UDP echo and a TCP echo, and the
//! test checks that the service process really ran as uid 65534 with exactly those two
//! capabilities. A fourth test runs the plugin's error paths (wrong hostname, unknown interface,
//! a plugin that closes early, bad and silent replies, ...) against the unprivileged `cnet run`:
//! each must end it with a clear error and a non-zero exit, without a panic, within 20 s.

use cnet_apps::deviceplugin;
use cnet_apps::lab::{self, Lab};
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const CNET: &str = env!("CARGO_BIN_EXE_cnet");
const TEST_DP: &str = env!("CARGO_BIN_EXE_afxdp-test-dp");

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

/// A temp dir everyone can traverse, removed on drop (with whatever the plugin left mounted in
/// it if it was killed).
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
        for m in [
            self.0.join(lab::STACK_DEV).join("xsks_map"),
            self.0.join(".bpffs").join(lab::STACK_DEV),
        ] {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test device plugin (`afxdp-test-dp`) for the lab's stack device, run as root in the stack
/// namespace with `dir` as its directory and the pool's uid 65534. Its stdout events are
/// collected; it is stopped (SIGTERM, which detaches the program and undoes its mounts) by
/// [`Plugin::finish`] or on drop.
struct Plugin {
    child: Child,
    events: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Plugin {
    /// Starts it with `args` added; returns once it printed `ready`.
    fn start(lab: &Lab, dir: &Path, args: &[&str]) -> Plugin {
        let stderr = dir.join(format!("plugin-{}.log", args.join("_").replace('/', "_")));
        let mut child = Command::new(TEST_DP)
            .arg("--netns")
            .arg(lab.stack_ns_path())
            .args(["--dev", lab::STACK_DEV, "--uid", &NOBODY.to_string()])
            .args(["--lifetime", "180", "--dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("afxdp-test-dp");
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ev = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready ") {
                    let _ = ready_tx.send(());
                }
                ev.lock().unwrap().push(line);
            }
        });
        let mut p = Plugin {
            child,
            events,
            stderr,
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = p.child.kill();
            panic!("the test device plugin did not get ready:\n{}", p.log());
        }
        p
    }

    /// Its stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it and returns its events but `ready` (which names temp paths).
    fn finish(mut self) -> Vec<String> {
        self.stop();
        let ev = self.events.lock().unwrap().clone();
        ev.into_iter()
            .filter(|l| !l.starts_with("ready "))
            .collect()
    }

    /// SIGTERM, then up to 10 s for it to undo everything; SIGKILL after that.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        // The reader thread sees EOF once the process is gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.events.lock().unwrap().iter().any(|l| l == "exit")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
    }
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

/// How the plugin hands the XSKMAP over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Handover {
    /// A pinning pool: the pin only.
    Pinned,
    /// The UDS handshake.
    Uds,
    /// A pool with both: the pin, and the socket beside it for busy polling.
    PinnedWithSocket,
}

/// Writes the service's config for the lab's stack device with `xskmap` (JSON, with any extra
/// port keys after it) into `dir`, readable by the service's user.
fn write_config(dir: &Path, tag: &str, xskmap: &str) -> PathBuf {
    let cfg = dir.join(format!("cnet-{tag}.jsonc"));
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
    cfg
}

/// The whole run for one way of handing the map over.
fn run_unprivileged(how: Handover) {
    let tag = match how {
        Handover::Pinned => "pin",
        Handover::Uds => "uds",
        Handover::PinnedWithSocket => "both",
    };
    let lab = Lab::new(&format!("cu{tag}"), 1).expect("lab");
    let dir = TempDir::new(tag);
    let devdir = dir.0.join(lab::STACK_DEV);
    // Busy polling goes through the plugin (the service may not set it).
    let busy = r#", "busy_poll": { "timeout_us": 20, "budget": 16 }"#;
    let (mode, xskmap, env): (&str, String, Vec<(&str, &str)>) = match how {
        Handover::Pinned => (
            "pinned",
            format!(r#"{{ "pinned": "{}" }}"#, devdir.join("xsks_map").display()),
            vec![],
        ),
        Handover::Uds => (
            "uds",
            format!(
                r#"{{ "uds": "{}" }}{busy}"#,
                devdir.join("afxdp.sock").display()
            ),
            vec![("AFXDP_DEVICES_CNETTEST", lab::STACK_DEV)],
        ),
        // The pin's directory: cnet opens its xsks_map and finds afxdp.sock beside it.
        Handover::PinnedWithSocket => (
            "both",
            format!(r#"{{ "pinned": "{}" }}{busy}"#, devdir.display()),
            vec![("AFXDP_DEVICES_CNETTEST", lab::STACK_DEV)],
        ),
    };
    let plugin = Plugin::start(&lab, &dir.0, &["--mode", mode]);
    let cfg = write_config(&dir.0, tag, &xskmap);
    let log = dir.0.join("stderr.log");
    let mut svc = start_unprivileged(&lab, &cfg, &log, &env);
    let logs = || {
        format!(
            "cnet run:\n{}\nplugin:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            plugin.log()
        )
    };
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
    if how == Handover::Uds {
        // A restarted container: the plugin served its one session and removed the socket.
        let log2 = dir.0.join("stderr-again.log");
        let again = start_unprivileged(&lab, &cfg, &log2, &env);
        let text = expect_clean_failure(again, &log2, "a second session");
        assert!(
            text.contains("cannot connect to the device plugin")
                && text.contains("one session per pod"),
            "{text}"
        );
    }
    let events = plugin.finish();
    let host = deviceplugin::hostname().unwrap();
    let session = |map: bool| {
        let mut v = vec![
            format!("request /connect,{host}"),
            "request /version".into(),
        ];
        if map {
            v.push(format!("request /xsk_map_fd,{}", lab::STACK_DEV));
        }
        v.extend([
            "request /config_busy_poll,20,16 +fd".into(),
            "busy_poll 20,16 applied read back prefer=1 busy_poll=20".into(),
            "request /fin".into(),
            "session fin".into(),
            "exit".into(),
        ]);
        v
    };
    match how {
        Handover::Pinned => assert_eq!(events, ["exit"]),
        Handover::Uds => assert_eq!(events, session(true)),
        Handover::PinnedWithSocket => assert_eq!(events, session(false)),
    }
}

/// Waits (up to 20 s) for `svc` to exit by itself, and checks that it failed cleanly: a
/// non-zero exit code (not a signal), an error on stderr, no panic. Returns its stderr.
fn expect_clean_failure(mut svc: Service, log: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = svc.0.try_wait().unwrap() {
            break s;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{what}: cnet run did not exit within 20 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        status.code().is_some_and(|c| c != 0),
        "{what}: cnet run should fail with an exit code, got {status}:\n{text}"
    );
    assert!(!text.contains("panicked"), "{what}: a panic:\n{text}");
    assert!(
        text.contains("Error: "),
        "{what}: no error reported:\n{text}"
    );
    text
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

#[test]
fn unprivileged_service_over_a_pin_with_busy_poll_through_the_socket_beside_it() {
    if skip("unprivileged_service_over_a_pin_with_busy_poll_through_the_socket_beside_it") {
        return;
    }
    run_unprivileged(Handover::PinnedWithSocket);
}

/// One error path: the plugin's arguments, the devices in `AFXDP_DEVICES_CNETTEST`, how long
/// after the plugin the service starts, what the service's error must say, and the plugin's last
/// events (the session's end included).
struct ErrorCase {
    name: &'static str,
    plugin: &'static [&'static str],
    devices: &'static str,
    start_after_ms: u64,
    error: &'static [&'static str],
    session: &'static str,
}

const ERROR_CASES: &[ErrorCase] = &[
    ErrorCase {
        name: "wrong hostname",
        plugin: &["--pod", "some-other-pod"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["refused pod", "/host_nak"],
        session: "session host_nak",
    },
    ErrorCase {
        name: "unknown interface",
        plugin: &[],
        devices: "cnet0 ghost0",
        start_after_ms: 0,
        error: &["no XSKMAP for device ghost0", "/fd_nak"],
        session: "session eof",
    },
    ErrorCase {
        name: "plugin closes early",
        plugin: &["--misbehave", "close-after-host-ok"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["closed the session", "\"/version\""],
        session: "session misbehaved",
    },
    ErrorCase {
        name: "PodResources API down",
        plugin: &["--misbehave", "pod-resources-down"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["/error", "PodResources"],
        session: "session host_nak",
    },
    ErrorCase {
        name: "wrong version",
        plugin: &["--misbehave", "wrong-version"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["protocol version \"0.2\""],
        session: "session eof",
    },
    ErrorCase {
        name: "bad reply",
        plugin: &["--misbehave", "bad-reply"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["unexpected device plugin reply", "/xsk_map_fd,cnet0"],
        session: "session eof",
    },
    ErrorCase {
        name: "fd_ack without a descriptor",
        plugin: &["--misbehave", "fd-ack-without-fd"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["/fd_ack for cnet0 without a file descriptor"],
        session: "session eof",
    },
    ErrorCase {
        name: "silent plugin",
        plugin: &["--misbehave", "silent"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["did not answer", "/connect,"],
        session: "session eof",
    },
    ErrorCase {
        name: "app started after the udsTimeout",
        plugin: &["--uds-timeout", "1"],
        devices: lab::STACK_DEV,
        start_after_ms: 1500,
        error: &["cannot connect to the device plugin", "larger udsTimeout"],
        session: "session timeout",
    },
    ErrorCase {
        name: "busy poll on a pin with no plugin socket beside it",
        plugin: &["--mode", "pinned"],
        devices: lab::STACK_DEV,
        start_after_ms: 0,
        error: &["SO_PREFER_BUSY_POLL", "Operation not permitted"],
        session: "exit",
    },
];

#[test]
fn unprivileged_service_fails_cleanly_on_plugin_errors() {
    if skip("unprivileged_service_fails_cleanly_on_plugin_errors") {
        return;
    }
    let lab = Lab::new("cuerr", 1).expect("lab");
    let dir = TempDir::new("err");
    let sock = dir.0.join(lab::STACK_DEV).join("afxdp.sock");
    let uds_cfg = write_config(
        &dir.0,
        "err",
        &format!(r#"{{ "uds": "{}" }}"#, sock.display()),
    );
    // A pinning pool without the UDS server: busy polling is the port's own, and needs
    // CAP_NET_ADMIN for SO_PREFER_BUSY_POLL.
    let pinned_cfg = write_config(
        &dir.0,
        "err-pinned",
        &format!(
            r#"{{ "pinned": "{}" }}, "busy_poll": {{ "timeout_us": 20, "budget": 16 }}"#,
            dir.0.join(lab::STACK_DEV).display()
        ),
    );
    for (i, case) in ERROR_CASES.iter().enumerate() {
        let cfg = if case.plugin.contains(&"pinned") {
            &pinned_cfg
        } else {
            &uds_cfg
        };
        let plugin = Plugin::start(&lab, &dir.0, case.plugin);
        let log = dir.0.join(format!("stderr-{i}.log"));
        std::thread::sleep(Duration::from_millis(case.start_after_ms));
        let started = Instant::now();
        let svc = start_unprivileged(&lab, cfg, &log, &[("AFXDP_DEVICES_CNETTEST", case.devices)]);
        let text = expect_clean_failure(svc, &log, case.name);
        let took = started.elapsed();
        for want in case.error {
            assert!(
                text.contains(want),
                "{}: the error should say {want:?}:\n{text}",
                case.name
            );
        }
        let events = plugin.finish();
        assert!(
            events.iter().any(|e| e == case.session),
            "{}: plugin events {events:?}",
            case.name
        );
        // anyhow's report: "Error: <context>", "Caused by:", then the plugin error.
        let cause = text
            .lines()
            .skip_while(|l| !l.starts_with("Caused by:"))
            .nth(1)
            .unwrap_or("")
            .trim();
        eprintln!(
            "{}: cnet run failed cleanly in {:.1} s: {cause}",
            case.name,
            took.as_secs_f64(),
        );
    }
}

/// A raw client of the test plugin (as root): what came back for a request.
struct Raw(std::os::fd::OwnedFd);

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = deviceplugin::wire::connect(path).expect("connect to the test plugin");
        deviceplugin::wire::set_timeouts(std::os::fd::AsFd::as_fd(&s), Duration::from_secs(3))
            .unwrap();
        Raw(s)
    }

    /// Sends `req` (with `fd` attached) and reads `n` replies, each as its text plus ` +N fd`
    /// when descriptors came with it (`<eof>` / `<timeout>` when none came).
    fn ask(&self, req: &str, fd: Option<std::os::fd::BorrowedFd<'_>>, n: usize) -> Vec<String> {
        use std::os::fd::AsFd;
        deviceplugin::wire::send(self.0.as_fd(), req.as_bytes(), fd).expect("send");
        (0..n).map(|_| self.read()).collect()
    }

    fn read(&self) -> String {
        use std::os::fd::AsFd;
        let mut buf = [0u8; 256];
        match deviceplugin::wire::recv_with(self.0.as_fd(), &mut buf, 4) {
            Ok(m) if m.len == 0 && !m.truncated => "<eof>".into(),
            Ok(m) => {
                let text = String::from_utf8_lossy(&buf[..m.len.min(256)]).into_owned();
                for f in &m.fds {
                    assert_eq!(
                        deviceplugin::map_type(f.as_fd()),
                        Some(deviceplugin::BPF_MAP_TYPE_XSKMAP),
                        "a descriptor from the plugin is its XSKMAP"
                    );
                }
                match m.fds.len() {
                    0 => text,
                    n => format!("{text} +{n} fd"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "<timeout>".into(),
            Err(e) => format!("<{e}>"),
        }
    }
}

const SO_BUSY_POLL: libc::c_int = 46;

/// The test plugin against shared/afxdp-dp-protocol.md §5, byte for byte, with a raw client: the
/// first-request rules, space stripping, the 64-byte cut, the loop's checks in order, fresh map
/// fds, `/config_busy_poll`'s odd paths (nak and go on, nak twice and close, close without a
/// reply) and its real setsockopt on the socket sent, `/error` + `/host_nak`, one session only,
/// and the udsTimeout on a read.
#[test]
fn test_plugin_follows_the_spec_byte_for_byte() {
    use std::os::fd::AsFd;
    if skip("test_plugin_follows_the_spec_byte_for_byte") {
        return;
    }
    let lab = Lab::new("cuspec", 1).expect("lab");
    let dir = TempDir::new("spec");
    let sock = dir.0.join(lab::STACK_DEV).join("afxdp.sock");
    let host = deviceplugin::hostname().unwrap();
    let connect = format!("/connect,{host}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let eof = || vec!["<eof>".to_string()];
    type Script<'a> = Vec<(String, Option<std::os::fd::BorrowedFd<'a>>, Vec<&'a str>)>;
    let step = |r: &str, fd, want: &[&'static str]| (r.to_string(), fd, want.to_vec());
    let scripts: Vec<(&str, &[&str], Script)> = vec![
        (
            "not /connect first",
            &[],
            vec![step("/version", None, &["<eof>"])],
        ),
        (
            "/connect with three fields",
            &[],
            vec![step(&format!("{connect},x"), None, &["/host_nak", "<eof>"])],
        ),
        (
            "/connect* is not /connect",
            &[],
            vec![step(
                &format!("/connectx,{host}"),
                None,
                &["/host_nak", "<eof>"],
            )],
        ),
        (
            "PodResources down",
            &["--misbehave", "pod-resources-down"],
            vec![step(&connect, None, &["/error", "/host_nak", "<eof>"])],
        ),
        (
            "the request loop",
            &[],
            vec![
                step(&format!("/connect, {host} "), None, &["/host_ok"]),
                step(&connect, None, &["/nak"]),
                step("/xsk_map_fd", None, &["/nak"]),
                step("/xsk_map_fd,a,b", None, &["/nak"]),
                step("/xsk_map_fd,ghost0", None, &["/fd_nak"]),
                step("/xsk_map_fd, cnet0", None, &["/fd_ack +1 fd"]),
                // Cut to 64 bytes by the plugin's buffer; the spaces are stripped.
                step(
                    &format!("/xsk_map_fd,cnet0{}", " ".repeat(60)),
                    None,
                    &["/fd_ack +1 fd"],
                ),
                step("/version ", None, &["/nak"]),
                step("/version", None, &["0.1"]),
                step("/config_busy_poll,5", Some(udp.as_fd()), &["/nak"]),
                step(
                    "/config_busy_poll,20,8",
                    Some(udp.as_fd()),
                    &["/config_busy_poll_ack"],
                ),
                step("/fin", None, &["/fin_ack", "<eof>"]),
            ],
        ),
        (
            "busy poll without a descriptor",
            &[],
            vec![
                step(&connect, None, &["/host_ok"]),
                step(
                    "/config_busy_poll,x",
                    None,
                    &["/config_busy_poll_nak", "/nak"],
                ),
                step(
                    "/config_busy_poll,1,2",
                    None,
                    &["/config_busy_poll_nak", "/config_busy_poll_nak", "<eof>"],
                ),
            ],
        ),
        (
            "busy poll arguments not integers",
            &[],
            vec![
                step(&connect, None, &["/host_ok"]),
                step("/config_busy_poll,a,2", Some(udp.as_fd()), &["<eof>"]),
            ],
        ),
        (
            "udsTimeout on a read",
            &["--uds-timeout", "1"],
            vec![step(&connect, None, &["/host_ok"])],
        ),
    ];
    for (name, args, script) in scripts {
        let plugin = Plugin::start(&lab, &dir.0, args);
        let raw = Raw::connect(&sock);
        let mut got = Vec::new();
        let mut want = Vec::new();
        for (req, fd, w) in &script {
            got.push(format!("> {req}"));
            got.extend(raw.ask(req, *fd, w.len()));
            want.push(format!("> {req}"));
            want.extend(w.iter().map(|s| s.to_string()));
        }
        if name == "udsTimeout on a read" {
            // Nothing sent for longer than the udsTimeout: the plugin closes, no reply.
            got.push(raw.read());
            want.extend(eof());
        }
        assert_eq!(got, want, "{name}\n{}", plugin.log());
        // One session per server: the socket is gone.
        let again = deviceplugin::wire::connect(&sock).map(|_| ());
        assert!(
            again.is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT)),
            "{name}: the socket must be gone after the session"
        );
        let events = plugin.finish();
        eprintln!("{name}: {events:?}");
    }
    // The plugin (root) set the options on the socket this process sent: it is the same socket.
    assert_eq!(
        deviceplugin::wire::int_opt(udp.as_fd(), SO_BUSY_POLL).unwrap(),
        20
    );
}
