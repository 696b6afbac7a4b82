//! The pod-side AF_XDP device plugin client against a mock plugin: a real SOCK_SEQPACKET server
//! thread that behaves as `shared/afxdp-dp-protocol.md` §5 says (64-byte reads, one session,
//! socket unlinked on close), plus misbehaving variants. Every case ends in a typed error, within
//! its timeout, never a panic or a hang. Pinned maps: error paths unprivileged; a real XSKMAP on a
//! bpffs mounted in a temp dir as root.

use cnet_apps::deviceplugin::{
    self, allocations_from_env, map_type, open_pinned, resolve_maps, resolve_maps_open, wire,
    Allocation, DpError, DpSession, MapRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POD: &str = "cnet-pod-0";
const DEVS: [&str; 2] = ["dpa", "dpb"];
const SHORT: Duration = Duration::from_millis(400);

/// How the mock misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Good,
    WrongVersion,
    PodResourcesDown,
    CloseOnConnect,
    SilentOn(&'static str),
    GarbageOn(&'static str),
    LongReplyOn(&'static str),
    CloseOn(&'static str),
    FdAckWithoutFd,
    FdAckTwoFds,
    BusyPollNak,
}

struct Mock {
    dir: PathBuf,
    sock: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

fn tmpdir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("cnet-dp-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Mock {
    fn start(mode: Mode) -> Mock {
        let dir = tmpdir("mock");
        let sock = dir.join("afxdp.sock");
        let listener = wire::listen(&sock).expect("mock listen");
        // The mock's T: accept and every read time out after 5 s, so the thread always ends.
        wire::set_timeouts(listener.as_fd(), Duration::from_secs(5)).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l2, s2) = (Arc::clone(&log), sock.clone());
        let thread = std::thread::spawn(move || {
            if let Ok(conn) = wire::accept(listener.as_fd()) {
                wire::set_timeouts(conn.as_fd(), Duration::from_secs(5)).unwrap();
                serve(&conn, mode, &l2);
            }
            // Close = close the connection and listener, unlink the socket.
            drop(listener);
            let _ = std::fs::remove_file(&s2);
        });
        Mock {
            dir,
            sock,
            log,
            thread: Some(thread),
        }
    }

    /// Waits for the mock to finish (it does within its 5 s deadline) and returns what it got.
    fn finish(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().expect("mock thread");
        let _ = std::fs::remove_dir_all(&self.dir);
        self.log.lock().unwrap().clone()
    }
}

fn a_fd() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn send(conn: &OwnedFd, s: &str) {
    let _ = wire::send(conn.as_fd(), s.as_bytes(), None);
}

/// The plugin's server loop (§5), with `mode`'s misbehaviour.
fn serve(conn: &OwnedFd, mode: Mode, log: &Mutex<Vec<String>>) {
    let known: Vec<String> = DEVS.iter().map(|d| d.to_string()).collect();
    let mut first = true;
    loop {
        let mut buf = [0u8; 64];
        let Ok(m) = wire::recv(conn.as_fd(), &mut buf) else {
            return;
        };
        if m.len == 0 {
            return;
        }
        let req = String::from_utf8_lossy(&buf[..m.len.min(64)]).into_owned();
        log.lock().unwrap().push(format!(
            "{req}{}",
            if m.fds.is_empty() { "" } else { " +fd" }
        ));
        let hit = |r: &str| req.starts_with(r);
        match mode {
            Mode::SilentOn(r) if hit(r) => {
                std::thread::sleep(SHORT * 3);
                return;
            }
            Mode::GarbageOn(r) if hit(r) => {
                let _ = wire::send(conn.as_fd(), b"\xff\xfe\0garbage", None);
                continue;
            }
            Mode::LongReplyOn(r) if hit(r) => {
                send(conn, &"/host_ok".repeat(40));
                continue;
            }
            Mode::CloseOn(r) if hit(r) => return,
            _ => {}
        }
        if first {
            first = false;
            if !req.contains("/connect") || mode == Mode::CloseOnConnect {
                return;
            }
            let f: Vec<&str> = req.split(',').collect();
            if f.len() != 2 || f[0] != "/connect" {
                send(conn, "/host_nak");
                return;
            }
            if mode == Mode::PodResourcesDown {
                send(conn, "/error");
                send(conn, "/host_nak");
                return;
            }
            if f[1].replace(' ', "") != POD {
                send(conn, "/host_nak");
                return;
            }
            send(conn, "/host_ok");
            continue;
        }
        if req.contains("/xsk_map_fd") {
            let f: Vec<&str> = req.split(',').collect();
            if f.len() != 2 || f[0] != "/xsk_map_fd" {
                send(conn, "/nak");
            } else if known.contains(&f[1].replace(' ', "")) {
                let fd = a_fd();
                match mode {
                    Mode::FdAckWithoutFd => send(conn, "/fd_ack"),
                    Mode::FdAckTwoFds => {
                        let fd2 = a_fd();
                        let _ = wire::send_fds(
                            conn.as_fd(),
                            b"/fd_ack",
                            &[fd.as_raw_fd(), fd2.as_raw_fd()],
                        );
                    }
                    _ => {
                        let _ = wire::send(conn.as_fd(), b"/fd_ack", Some(fd.as_fd()));
                    }
                }
            } else {
                send(conn, "/fd_nak");
            }
        } else if req == "/version" {
            send(
                conn,
                if mode == Mode::WrongVersion {
                    "0.2"
                } else {
                    "0.1"
                },
            );
        } else if req.contains("/config_busy_poll") {
            if m.fds.is_empty() {
                send(conn, "/config_busy_poll_nak");
                continue;
            }
            let f: Vec<&str> = req.split(',').collect();
            if f.len() != 3 || f[0] != "/config_busy_poll" {
                send(conn, "/nak");
            } else if f[1].parse::<i32>().is_err() || f[2].parse::<i32>().is_err() {
                return;
            } else if mode == Mode::BusyPollNak {
                send(conn, "/config_busy_poll_nak");
                return;
            } else {
                send(conn, "/config_busy_poll_ack");
            }
        } else if req == "/fin" {
            send(conn, "/fin_ack");
            return;
        } else {
            send(conn, "/nak");
        }
    }
}

/// Runs `f` against a mock in `mode`; checks it ended in time; returns its result and the mock's log.
fn against<T>(
    mode: Mode,
    f: impl FnOnce(&Path) -> Result<T, DpError>,
) -> (Result<T, DpError>, Vec<String>) {
    let mock = Mock::start(mode);
    let t0 = Instant::now();
    let r = f(&mock.sock);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "client took {:?}",
        t0.elapsed()
    );
    (r, mock.finish())
}

fn session(path: &Path) -> Result<DpSession, DpError> {
    DpSession::connect(path, POD, SHORT)
}

#[test]
fn full_session_gets_every_map_fd_configures_busy_poll_and_fins() {
    let (r, log) = against(Mode::Good, |p| {
        let mut s = session(p)?;
        let a = s.map_fd("dpa")?;
        let b = s.map_fd("dpb")?;
        // The received descriptors are real and distinct.
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        std::fs::File::from(a.try_clone().unwrap())
            .metadata()
            .unwrap();
        let xsk = a_fd();
        s.config_busy_poll(xsk.as_fd(), 20, 64)?;
        s.fin()
    });
    r.expect("good session");
    assert_eq!(
        log,
        [
            "/connect,cnet-pod-0",
            "/version",
            "/xsk_map_fd,dpa",
            "/xsk_map_fd,dpb",
            "/config_busy_poll,20,64 +fd",
            "/fin"
        ]
    );
}

#[test]
fn a_session_cannot_be_used_twice() {
    let mock = Mock::start(Mode::Good);
    let p = mock.sock.clone();
    let s = session(&p).unwrap();
    s.fin().unwrap();
    mock.finish();
    match session(&p) {
        Err(DpError::Connect { hint, .. }) => assert!(hint.contains("one session per pod")),
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[test]
fn unknown_hostname_is_host_nak() {
    let (r, _) = against(Mode::Good, |p| DpSession::connect(p, "other-pod", SHORT));
    assert!(
        matches!(r, Err(DpError::HostNak { ref hint, .. }) if hint.is_empty()),
        "{r:?}"
    );
}

#[test]
fn hostname_over_55_characters_is_refused_with_a_hint() {
    let long = "p".repeat(60);
    let (r, log) = against(Mode::Good, |p| DpSession::connect(p, &long, SHORT));
    let e = r.unwrap_err();
    assert!(matches!(e, DpError::HostNak { .. }), "{e:?}");
    assert!(e.to_string().contains("at most 55"), "{e}");
    // The plugin's 64-byte read cut the request.
    assert_eq!(log[0].len(), 64);
}

#[test]
fn hostname_of_55_characters_is_accepted_by_length() {
    // 55 is the limit: "/connect," + 55 = 64 bytes arrives whole (refused only as unknown).
    let h = "q".repeat(55);
    let (r, log) = against(Mode::Good, |p| DpSession::connect(p, &h, SHORT));
    assert!(
        matches!(r, Err(DpError::HostNak { ref hint, .. }) if hint.is_empty()),
        "{r:?}"
    );
    assert_eq!(log[0], format!("/connect,{h}"));
}

#[test]
fn pod_resources_error_is_typed_and_both_datagrams_are_read() {
    let (r, _) = against(Mode::PodResourcesDown, session);
    assert!(matches!(r, Err(DpError::PodResources { .. })), "{r:?}");
}

#[test]
fn wrong_version_is_rejected() {
    let (r, _) = against(Mode::WrongVersion, session);
    assert!(
        matches!(r, Err(DpError::Version { ref got }) if got == "0.2"),
        "{r:?}"
    );
}

#[test]
fn plugin_closing_on_connect_is_closed() {
    let (r, _) = against(Mode::CloseOnConnect, session);
    assert!(matches!(r, Err(DpError::Closed { .. })), "{r:?}");
}

#[test]
fn plugin_closing_early_is_closed() {
    let (r, _) = against(Mode::CloseOn("/version"), session);
    assert!(
        matches!(r, Err(DpError::Closed { ref request }) if request == "/version"),
        "{r:?}"
    );
    let (r, _) = against(Mode::CloseOn("/xsk_map_fd"), |p| session(p)?.map_fd("dpa"));
    assert!(matches!(r, Err(DpError::Closed { .. })), "{r:?}");
}

#[test]
fn no_reply_times_out() {
    for on in ["/connect", "/version", "/xsk_map_fd", "/fin"] {
        let t0 = Instant::now();
        let (r, _) = against(Mode::SilentOn(on), |p| {
            let mut s = session(p)?;
            s.map_fd("dpa")?;
            s.fin()
        });
        assert!(
            matches!(r, Err(DpError::Timeout { ref request, .. }) if request.starts_with(on)),
            "{on}: {r:?}"
        );
        assert!(t0.elapsed() >= SHORT, "{on}: timed out too early");
    }
}

#[test]
fn garbage_and_overlong_replies_are_unexpected() {
    for on in ["/connect", "/xsk_map_fd", "/fin"] {
        let (r, _) = against(Mode::GarbageOn(on), |p| {
            let mut s = session(p)?;
            s.map_fd("dpa")?;
            s.fin()
        });
        assert!(matches!(r, Err(DpError::Unexpected { .. })), "{on}: {r:?}");
    }
    let (r, _) = against(Mode::GarbageOn("/version"), session);
    assert!(matches!(r, Err(DpError::Version { .. })), "{r:?}");
    let (r, _) = against(Mode::LongReplyOn("/connect"), session);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("longer than"), "{e}");
}

#[test]
fn fd_problems_are_typed() {
    let (r, _) = against(Mode::FdAckWithoutFd, |p| session(p)?.map_fd("dpa"));
    assert!(
        matches!(r, Err(DpError::FdMissing { ref dev }) if dev == "dpa"),
        "{r:?}"
    );
    let (r, _) = against(Mode::FdAckTwoFds, |p| session(p)?.map_fd("dpa"));
    assert!(
        matches!(
            r,
            Err(DpError::BadFds { count: 2.., .. })
                | Err(DpError::BadFds {
                    trunc: ", truncated",
                    ..
                })
        ),
        "{r:?}"
    );
    let (r, _) = against(Mode::Good, |p| session(p)?.map_fd("nosuch"));
    assert!(
        matches!(r, Err(DpError::FdNak { ref dev }) if dev == "nosuch"),
        "{r:?}"
    );
    let (r, _) = against(Mode::Good, |p| session(p)?.map_fd("a,b"));
    assert!(matches!(r, Err(DpError::BadRequest { .. })), "{r:?}");
}

#[test]
fn busy_poll_nak_is_typed() {
    let (r, _) = against(Mode::BusyPollNak, |p| {
        let mut s = session(p)?;
        let x = a_fd();
        s.config_busy_poll(x.as_fd(), 50, 64)
    });
    assert!(matches!(r, Err(DpError::BusyPollNak)), "{r:?}");
}

#[test]
fn env_lists_devices_per_pool() {
    let env = |v: &[(&str, &str)]| {
        allocations_from_env(v.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    };
    assert_eq!(
        env(&[
            ("PATH", "/bin"),
            ("AFXDP_DEVICES_POOLB", "ens1v1"),
            ("AFXDP_DEVICES_POOLA", "ens0v3  ens0v4"),
        ])
        .unwrap(),
        vec![
            Allocation {
                pool: "POOLA".into(),
                devices: vec!["ens0v3".into(), "ens0v4".into()]
            },
            Allocation {
                pool: "POOLB".into(),
                devices: vec!["ens1v1".into()]
            },
        ]
    );
    assert!(env(&[]).unwrap().is_empty());
    assert!(matches!(
        env(&[("AFXDP_DEVICES_P", " ")]),
        Err(DpError::Env { .. })
    ));
    assert!(matches!(
        env(&[("AFXDP_DEVICES_P-1", "x")]),
        Err(DpError::Env { .. })
    ));
    assert!(matches!(
        env(&[("AFXDP_DEVICES_P", "a/b")]),
        Err(DpError::Env { .. })
    ));
}

#[test]
fn resolve_maps_uses_one_session_for_every_device_of_the_pool() {
    let (r, log) = against(Mode::Good, |p| {
        let ports: BTreeMap<String, MapRequest> = DEVS
            .iter()
            .map(|d| (d.to_string(), MapRequest::Uds(Some(p.to_path_buf()))))
            .collect();
        let env = [("AFXDP_DEVICES_POOL".to_string(), "dpa dpb".to_string())];
        resolve_maps(&ports, env, POD, SHORT)
    });
    let maps = r.expect("resolved");
    assert_eq!(maps.keys().collect::<Vec<_>>(), ["dpa", "dpb"]);
    assert_eq!(
        log,
        [
            "/connect,cnet-pod-0",
            "/version",
            "/xsk_map_fd,dpa",
            "/xsk_map_fd,dpb",
            "/fin"
        ]
    );
    // Only one port configured: every device of the pool is still fetched in the one session.
    let (r, log) = against(Mode::Good, |p| {
        let ports = BTreeMap::from([("dpb".to_string(), MapRequest::Uds(Some(p.to_path_buf())))]);
        let env = [("AFXDP_DEVICES_POOL".to_string(), "dpa dpb".to_string())];
        resolve_maps(&ports, env, POD, SHORT)
    });
    assert_eq!(r.unwrap().keys().collect::<Vec<_>>(), ["dpb"]);
    assert_eq!(log.len(), 5);
}

#[test]
fn resolve_maps_refuses_a_device_not_allocated() {
    let ports = BTreeMap::from([("cnetnone0".to_string(), MapRequest::Uds(None))]);
    let env = [("AFXDP_DEVICES_POOL".to_string(), "dpa".to_string())];
    let e = resolve_maps(&ports, env, POD, SHORT).unwrap_err();
    assert!(matches!(e, DpError::NotAllocated { .. }), "{e:?}");
    assert!(e.to_string().contains("POOL=dpa"), "{e}");
}

#[test]
fn pinned_error_paths() {
    let d = tmpdir("pin");
    let e = open_pinned(&d.join("missing")).unwrap_err();
    assert!(
        matches!(e, DpError::Pinned { ref source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
        "{e:?}"
    );
    // A plain file is no BPF object.
    std::fs::write(d.join("plain"), b"x").unwrap();
    assert!(matches!(
        open_pinned(&d.join("plain")),
        Err(DpError::Pinned { .. })
    ));
    // A directory means its xsks_map (bpfman CSI mount path).
    let ports = BTreeMap::from([("dpa".to_string(), MapRequest::Pinned(Some(d.clone())))]);
    match resolve_maps(&ports, std::iter::empty(), POD, SHORT) {
        Err(DpError::Pinned { path, .. }) => assert_eq!(path, d.join("xsks_map")),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A bpffs mounted on a fresh temp dir, unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(dir: &Path) -> Option<Bpffs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Bpffs(dir.to_path_buf()))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `BPF_MAP_CREATE` of an XSKMAP (u32 -> u32, 64 entries, as the plugin's) and `BPF_OBJ_PIN`.
fn create_pinned_xskmap(path: &Path) -> std::io::Result<()> {
    let mut attr = [0u32; 30];
    attr[0] = deviceplugin::BPF_MAP_TYPE_XSKMAP;
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 64;
    // SAFETY: a zeroed bpf_attr of 120 bytes with the BPF_MAP_CREATE fields set.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 120u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut pin = [0u64; 3];
    pin[0] = c.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: BPF_OBJ_PIN (6) with pathname and bpf_fd set; `c` outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, pin.as_mut_ptr(), 24u32) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
    if rc != 0 {
        return Err(err);
    }
    Ok(())
}

#[test]
fn pinned_xskmap_on_a_real_bpffs_and_the_pin_wins_over_the_socket() {
    // SAFETY: plain call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP pinned_xskmap_on_a_real_bpffs: needs root (mount bpffs, create an XSKMAP)");
        return;
    }
    let d = tmpdir("bpffs");
    let Some(fs) = Bpffs::mount(&d) else {
        eprintln!("SKIP pinned_xskmap_on_a_real_bpffs: mount -t bpf failed");
        return;
    };
    if let Err(e) = create_pinned_xskmap(&fs.0.join("xsks_map")) {
        eprintln!("SKIP pinned_xskmap_on_a_real_bpffs: cannot create an XSKMAP: {e}");
        return;
    }
    // Explicit pin path (the plugin's file) and a directory (bpfman CSI mount path).
    for p in [fs.0.join("xsks_map"), fs.0.clone()] {
        let ports = BTreeMap::from([("dpa".to_string(), MapRequest::Pinned(Some(p)))]);
        let maps = resolve_maps(&ports, std::iter::empty(), POD, SHORT).expect("pinned map");
        assert_eq!(
            map_type(maps["dpa"].as_fd()),
            Some(deviceplugin::BPF_MAP_TYPE_XSKMAP)
        );
    }
    // The plugin's default layout: /tmp/afxdp_dp/<dev>/xsks_map next to a socket path that
    // does not answer. The pin wins, so no connection is attempted.
    let dev = format!("cnt{}", std::process::id() % 100_000);
    let dev_dir = PathBuf::from(deviceplugin::DP_DIR).join(&dev);
    std::fs::create_dir_all(&dev_dir).unwrap();
    let Some(fs2) = Bpffs::mount(&dev_dir) else {
        panic!("second bpffs mount failed after the first worked");
    };
    create_pinned_xskmap(&deviceplugin::pinned_map_path(&dev)).unwrap();
    let ports = BTreeMap::from([(dev.clone(), MapRequest::Uds(Some(d.join("no.sock"))))]);
    let maps = resolve_maps(&ports, std::iter::empty(), POD, SHORT).expect("pin preferred");
    assert_eq!(
        map_type(maps[&dev].as_fd()),
        Some(deviceplugin::BPF_MAP_TYPE_XSKMAP)
    );
    drop(fs2);
    drop(fs);
}

/// A pool with both UDS and pinning mounts `xsks_map` and `afxdp.sock` in one directory: the map
/// comes from the pin, and a port that wants busy polling gets a session that asks for no map,
/// only `/config_busy_poll`. A pin without a socket beside it gets no session.
#[test]
fn pinned_map_with_the_socket_beside_it_busy_polls_through_the_plugin() {
    // SAFETY: plain call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP pinned_map_with_the_socket_beside_it: needs root (bpffs, XSKMAP)");
        return;
    }
    let mock = Mock::start(Mode::Good);
    let fs_dir = mock.dir.join("fs");
    std::fs::create_dir_all(&fs_dir).unwrap();
    let Some(fs) = Bpffs::mount(&fs_dir) else {
        eprintln!("SKIP pinned_map_with_the_socket_beside_it: mount -t bpf failed");
        return;
    };
    create_pinned_xskmap(&fs.0.join("xsks_map")).expect("XSKMAP");
    // The pin beside the socket, as the kubelet bind-mounts it into the container.
    let shown = mock.dir.join("xsks_map");
    std::fs::write(&shown, b"").unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(fs.0.join("xsks_map"))
        .arg(&shown)
        .status()
        .is_ok_and(|s| s.success());
    assert!(bound, "mount --bind of the pin");
    let keep = BTreeSet::from(["dpa".to_string()]);
    let env = [("AFXDP_DEVICES_POOL".to_string(), "dpa dpb".to_string())];
    let ports = BTreeMap::from([(
        "dpa".to_string(),
        MapRequest::Pinned(Some(mock.dir.clone())),
    )]);
    let (maps, open) = resolve_maps_open(&ports, env.clone(), POD, SHORT, &keep).expect("resolved");
    assert_eq!(
        map_type(maps["dpa"].as_fd()),
        Some(deviceplugin::BPF_MAP_TYPE_XSKMAP)
    );
    assert_eq!(open.len(), 1);
    let mut it = open.into_iter();
    let mut s = it.next().unwrap();
    assert_eq!(s.devices, ["dpa", "dpb"]);
    s.session.config_busy_poll(a_fd().as_fd(), 20, 16).unwrap();
    s.session.fin().unwrap();
    let _ = std::process::Command::new("umount").arg(&shown).status();
    // The plugin's own pin directory has no socket: no session, the port sets the options.
    let ports = BTreeMap::from([("dpa".to_string(), MapRequest::Pinned(Some(fs.0.clone())))]);
    let (maps, open) = resolve_maps_open(&ports, env, POD, SHORT, &keep).expect("resolved");
    assert!(maps.contains_key("dpa") && open.is_empty());
    drop(fs);
    assert_eq!(
        mock.finish(),
        [
            "/connect,cnet-pod-0",
            "/version",
            "/config_busy_poll,20,16 +fd",
            "/fin"
        ]
    );
}
