//! `cnet run` end to end on AF_XDP (root; skipped with a message otherwise), in a lab of two
//! namespaces this test creates: UDP and TCP echo to a kernel peer, `/readyz`, `/metrics`
//! scraped and parsed with the counters moving, `cnet stats [--json]`, `cnet ss`, and the
//! partial-checksum trap (kernel peer with TX offload ON) diagnosed by the watchdog and its
//! metric. Also `cnet doctor` on a veth pair whose peer has TX checksum offload on.

use cnet_apps::lab::{self, Lab};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CNET: &str = env!("CARGO_BIN_EXE_cnet");

fn skip() -> bool {
    if let Some(why) = lab::missing_requirements() {
        eprintln!("SKIPPED (needs root and AF_XDP): {why}");
        return true;
    }
    false
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(lab: &Lab, path: &str) -> (String, String) {
    let out = lab
        .exec(
            &lab.stack_ns,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:9464{path}"),
            ],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// Sends `n` datagrams from the kernel side, returns how many came back.
fn udp_echo(lab: &Lab, n: u32) -> u32 {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(0.5)\nk=0\n\
         for i in range({n}):\n  s.sendto(b'ping%d'%i,('198.18.0.2',7))\n  try:\n    d,_=s.recvfrom(100)\n    k+=d==b'ping%d'%i\n  except socket.timeout:\n    pass\nprint(k)\n"
    );
    let out = lab
        .kernel(&["python3", "-c", &script])
        .expect("python3 in the kernel namespace");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The value of the series `name{labels}` in OpenMetrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Checks the text format line by line (and with Python's prometheus_client parser when present).
fn check_format(lab: &Lab, text: &str) {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let mut samples = 0;
    for l in text.lines() {
        if l.starts_with('#') {
            assert!(
                l.starts_with("# HELP ") || l.starts_with("# TYPE ") || l == "# EOF",
                "{l}"
            );
            continue;
        }
        let (series, value) = l.rsplit_once(' ').expect("series value");
        assert!(series.starts_with("cnet_"), "{l}");
        assert!(value.parse::<f64>().is_ok(), "{l}");
        samples += 1;
    }
    assert!(
        samples > 100,
        "every counter of the queue is exported ({samples} samples)"
    );
    let parser = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
                  fams=list(p(sys.stdin.read()))\nprint(len(fams))\n";
    let probe = lab.exec(
        &lab.stack_ns,
        &["python3", "-c", "import prometheus_client"],
    );
    if probe.is_err() {
        eprintln!("note: python3 prometheus_client not installed: parsed by the line checks only");
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", parser])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the text: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n > 50, "{n} metric families");
}

fn control(args: &[&str]) -> String {
    let out = Command::new(CNET).args(args).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cnet {args:?}: {s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl` from the kernel namespace to cnet's HTTP app: (status, body bytes downloaded).
fn curl_http(lab: &Lab, path: &str) -> (String, usize) {
    let out = lab
        .kernel(&[
            "curl",
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://198.18.0.2:80{path}"),
        ])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (code, size) = out.trim().split_once(' ').unwrap_or(("", ""));
    (code.to_string(), size.parse().unwrap_or(0))
}

/// Starts `cnet run --config cfg` in the stack namespace, its stderr to `log`.
fn start_service(lab: &Lab, cfg: &std::path::Path, log: &std::path::Path) -> Service {
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.stack_ns, CNET, "run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Service(child)
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn stop_service(svc: &mut Service, log: &std::path::Path) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(svc.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = svc.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "cnet run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn run_serves_echo_metrics_control_and_diagnoses_partial_checksums() {
    if skip() {
        return;
    }
    let lab = Lab::new("csv", 1).expect("lab");
    let dir = std::env::temp_dir().join(format!("cnet-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("cnet.sock");
    let cfg = dir.join("cnet.jsonc");
    std::fs::write(
        &cfg,
        format!(
            r#"{{
  // test service
  "ports": {{ "p0": {{ "interface": "{dev}", "queues": [0], "bind": "copy" }} }},
  "apps": {{ "udp_echo": {{ "port": 7 }}, "tcp_echo": {{ "port": 7 }}, "http": {{ "port": 80, "threads": 1 }} }},
  "metrics": {{ "listen": "127.0.0.1:9464" }},
  "control": {{ "socket": "{sock}" }},
  "diagnostics": {{ "interval_s": 0.5, "min_frames": 5 }},
}}"#,
            dev = lab::STACK_DEV,
            sock = sock.display()
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let mut svc = start_service(&lab, &cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_for("/readyz 200", Duration::from_secs(15), || {
        assert!(
            svc.0.try_wait().unwrap().is_none(),
            "cnet run exited: {}",
            logs()
        );
        curl(&lab, "/readyz").0 == "200"
    });
    assert_eq!(curl(&lab, "/healthz").0, "200");
    assert_eq!(curl(&lab, "/nope").0, "404");

    // UDP echo; the counters move.
    let (_, before) = curl(&lab, "/metrics");
    let series = r#"cnet_stack_udp_delivered_total{port="p0",iface="cnet0",queue="0"}"#;
    let d0 = metric(&before, series).unwrap_or_else(|| panic!("{series} missing:\n{before}"));
    let echoed = udp_echo(&lab, 20);
    assert!(echoed >= 18, "{echoed} of 20 echoed; {}", logs());
    let (code, text) = curl(&lab, "/metrics");
    assert_eq!(code, "200");
    check_format(&lab, &text);
    let d1 = metric(&text, series).unwrap();
    assert!(d1 >= d0 + 18.0, "udp_delivered {d0} -> {d1}");
    assert_eq!(
        metric(
            &text,
            r#"cnet_queue_running{port="p0",iface="cnet0",queue="0"}"#
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            r#"cnet_pool_frames{port="p0",iface="cnet0",queue="0"}"#
        )
        .unwrap()
            > 0.0
    );
    // The AF_XDP socket's and the kernel's statistics, published by the queue every 250 ms.
    wait_for(
        "port statistics in /metrics",
        Duration::from_secs(5),
        || {
            let text = curl(&lab, "/metrics").1;
            metric(
                &text,
                r#"cnet_port_xdp_rx_frames_total{port="p0",iface="cnet0",queue="0"}"#,
            )
            .is_some_and(|v| v >= 18.0)
                && metric(
                    &text,
                    r#"cnet_port_kernel_rx_ring_full_total{port="p0",iface="cnet0",queue="0"}"#,
                )
                .is_some()
                && metric(
                    &text,
                    r#"cnet_port_xdp_frames_held{port="p0",iface="cnet0",queue="0"}"#,
                )
                .is_some_and(|v| v > 0.0)
        },
    );

    // Control socket.
    let s = sock.to_str().unwrap();
    let stats = control(&["stats", "--socket", s]);
    assert!(
        stats.contains("p0 (cnet0) queue 0: running, synced"),
        "{stats}"
    );
    assert!(stats.contains("udp_delivered"), "{stats}");
    let json: serde_json::Value =
        serde_json::from_str(&control(&["stats", "--socket", s, "--json"])).unwrap();
    assert!(
        json["queues"][0]["counters"]["udp_delivered"]
            .as_u64()
            .unwrap()
            >= 18
    );
    let holder = Command::new("ip")
        .args(["netns", "exec", &lab.kernel_ns, "python3", "-c",
            "import socket,time\nc=socket.create_connection(('198.18.0.2',7),timeout=3)\nc.sendall(b'hello')\nassert c.recv(5)==b'hello'\nprint('ok',flush=True)\ntime.sleep(4)\n"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = Service(holder);
    let mut ss = String::new();
    wait_for(
        "an established connection in cnet ss",
        Duration::from_secs(4),
        || {
            ss = control(&["ss", "--socket", s]);
            ss.contains("Established") && ss.contains("198.18.0.1:")
        },
    );
    assert!(ss.contains("198.18.0.2:7"), "{ss}");
    assert!(ss.contains("udp Bound") && ss.contains("0.0.0.0:7"), "{ss}");
    assert!(
        ss.lines().any(|l| l.starts_with("tcp Listen")
            && l.contains("0.0.0.0:7")
            && l.contains("backlog:")),
        "no TCP listener in ss: {ss}"
    );
    let _ = holder.0.kill();
    let route = control(&["route", "--socket", s]);
    assert!(route.contains("p0 (cnet0) queue 0:"), "{route}");
    assert!(route.contains("198.18.0.0/24 link"), "{route}");
    let neigh = control(&["neigh", "--socket", s]);
    assert!(neigh.contains("198.18.0.1 lladdr"), "{neigh}");
    let watch = control(&[
        "stats",
        "--socket",
        s,
        "--watch",
        "--interval",
        "0.1",
        "--count",
        "2",
    ]);
    assert_eq!(
        watch.matches("p0 (cnet0) queue 0: running").count(),
        2,
        "{watch}"
    );

    // The http app, fetched with curl from the kernel side.
    assert_eq!(
        curl_http(&lab, "/bytes/3000"),
        ("200".into(), 3000),
        "{}",
        logs()
    );
    assert_eq!(curl_http(&lab, "/").0, "200");
    assert_eq!(curl_http(&lab, "/nope").0, "404");

    // The partial-checksum trap: offload ON on the kernel side.
    lab.kernel(&["ethtool", "-K", lab::KERNEL_DEV, "tx", "on"])
        .unwrap();
    let echoed = udp_echo(&lab, 3);
    assert_eq!(echoed, 0, "partial checksums are dropped by default");
    // A burst, so that one diagnostics interval sees enough frames.
    let burst = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 for i in range(200): s.sendto(b'x'*32,('198.18.0.2',7))\n";
    lab.kernel(&["python3", "-c", burst]).unwrap();
    let alarm = r#"cnet_bad_checksum_alarm{port="p0",iface="cnet0",queue="0"}"#;
    let mut last = String::new();
    wait_for("the bad-checksum warning", Duration::from_secs(5), || {
        last = curl(&lab, "/metrics").1;
        logs().contains("ethtool -K") && logs().contains("dropped for a bad UDP/TCP checksum")
    });
    assert!(
        logs().contains("dropped for a bad UDP/TCP checksum"),
        "{}",
        logs()
    );
    assert!(
        logs().contains("dropped with a partial UDP/TCP checksum")
            && logs().contains("accept-partial"),
        "logged with both fixes: {}",
        logs()
    );
    assert_eq!(
        logs()
            .matches("dropped with a partial UDP/TCP checksum")
            .count(),
        1,
        "logged once"
    );
    let drops = r#"cnet_stack_drops_total{port="p0",iface="cnet0",queue="0",reason="udp_partial_checksum"}"#;
    assert!(metric(&last, drops).unwrap() >= 10.0, "{last}");
    assert!(metric(&last, "cnet_diagnostic_warnings_total").unwrap() >= 1.0);
    // The alarm gauge is 1 during the interval that saw the drops; it was seen by the warning.
    assert!(metric(&last, alarm).is_some());

    // SIGTERM: clean stop, control socket removed.
    stop_service(&mut svc, &log);
    assert!(!sock.exists(), "control socket removed");

    // accept-partial: the same peer, offload still ON, is served (and counted).
    std::fs::write(
        &cfg,
        format!(
            r#"{{
  "ports": {{ "p0": {{ "interface": "{dev}", "queues": [0], "bind": "copy" }} }},
  "stack": {{ "rx_checksum": "accept-partial" }},
  "apps": {{ "udp_echo": {{ "port": 7 }}, "http": {{ "port": 80, "threads": 1 }} }},
  "metrics": {{ "listen": "127.0.0.1:9464" }},
  "control": {{ "socket": "{sock}" }},
}}"#,
            dev = lab::STACK_DEV,
            sock = sock.display()
        ),
    )
    .unwrap();
    let mut svc = start_service(&lab, &cfg, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "/readyz 200 (accept-partial)",
        Duration::from_secs(15),
        || {
            assert!(
                svc.0.try_wait().unwrap().is_none(),
                "cnet run exited: {}",
                logs()
            );
            curl(&lab, "/readyz").0 == "200"
        },
    );
    let echoed = udp_echo(&lab, 20);
    assert!(
        echoed >= 18,
        "{echoed} of 20 echoed with accept-partial; {}",
        logs()
    );
    assert_eq!(
        curl_http(&lab, "/bytes/2000"),
        ("200".into(), 2000),
        "{}",
        logs()
    );
    let json: serde_json::Value =
        serde_json::from_str(&control(&["stats", "--socket", s, "--json"])).unwrap();
    let c = &json["queues"][0]["counters"];
    assert!(
        c["rx_partial_checksum_accepted"].as_u64().unwrap_or(0) >= 18,
        "{c}"
    );
    assert!(c["drop_udp_partial_checksum"].is_null(), "{c}");
    stop_service(&mut svc, &log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn doctor_flags_peer_tx_checksum_offload_and_mtu() {
    if unsafe { libc::geteuid() } != 0 || Command::new("ethtool").arg("--version").output().is_err()
    {
        eprintln!("SKIPPED (needs root, ip and ethtool)");
        return;
    }
    let ns = format!("cnetdoc{}", std::process::id());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    lab::run(&["ip", "netns", "add", &ns]).unwrap();
    let _guard = Ns(ns.clone());
    lab::run(&[
        "ip", "-n", &ns, "link", "add", "dva", "type", "veth", "peer", "name", "dvb",
    ])
    .unwrap();
    lab::run(&["ip", "-n", &ns, "link", "set", "dva", "up"]).unwrap();
    lab::run(&["ip", "-n", &ns, "link", "set", "dvb", "up"]).unwrap();
    let doctor = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, CNET, "doctor", "--iface", "dvb"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    lab::run(&[
        "ip", "netns", "exec", &ns, "ethtool", "-K", "dva", "tx", "on",
    ])
    .unwrap();
    let (ok, out) = doctor();
    assert!(!ok, "{out}");
    assert!(out.contains("[FAIL] peer_tx_checksum"), "{out}");
    assert!(out.contains("fix: ethtool -K dva tx off"), "{out}");
    assert!(out.contains("[ ok ] link"), "{out}");
    assert!(out.contains("[ ok ] mtu"), "{out}");
    lab::run(&[
        "ip", "netns", "exec", &ns, "ethtool", "-K", "dva", "tx", "off",
    ])
    .unwrap();
    let (ok, out) = doctor();
    assert!(ok, "{out}");
    assert!(out.contains("[ ok ] peer_tx_checksum"), "{out}");
    lab::run(&["ip", "-n", &ns, "link", "set", "dvb", "mtu", "3000"]).unwrap();
    lab::run(&["ip", "-n", &ns, "link", "set", "dvb", "down"]).unwrap();
    let (ok, out) = doctor();
    assert!(!ok);
    assert!(
        out.contains("[FAIL] mtu") && out.contains("fix: ip link set dvb mtu 1778"),
        "{out}"
    );
    assert!(
        out.contains("[FAIL] link") && out.contains("ip link set dvb up"),
        "{out}"
    );
    let out = Command::new(CNET)
        .args(["doctor", "--iface", "nosuchif0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nosuchif0 does not exist"));
}
