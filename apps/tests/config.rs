//! The configuration loader: the documented example, `cnet check-config`, and bad files whose
//! messages must name the file, line, column, field path and what is wrong.

use cnet_apps::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cnet.jsonc")
}

#[test]
fn documented_example_is_valid_and_means_what_it_says() {
    let cfg = Config::load(&example()).expect("deploy/cnet.jsonc is valid");
    let p = &cfg.ports["p0"];
    assert_eq!(p.interface, "vb");
    assert_eq!(p.queues, vec![0]);
    assert_eq!(p.addresses.len(), 1);
    assert_eq!(p.stack_routes().len(), 1);
    let x = cfg.xdp_config("p0").unwrap();
    assert_eq!((x.frames, x.frame_size, x.headroom), (4096, 2048, 192));
    assert_eq!(cfg.apps.udp_echo.as_ref().unwrap().port, 7);
    assert_eq!(cfg.apps.tcp_echo.as_ref().unwrap().backlog, 1024);
    assert_eq!(cfg.stack.tcp_max_connections, Some(4096));
    assert!(cfg.metrics.is_some() && cfg.control.is_some());
    let mut sc = cnet_stack::StackConfig::new(cnet_stack::MacAddr([2, 0, 0, 0, 0, 1]));
    sc.tcp_max_connections = 1;
    cfg.stack.apply(&mut sc);
    assert_eq!(sc.tcp_max_connections, 4096);
    let h = cfg.apps.http.as_ref().expect("the example serves http");
    assert_eq!((h.port, h.threads), (80, 2));
    assert_eq!(
        cfg.stack.rx_checksum,
        Some(cnet_apps::config::RxChecksum::Verify)
    );
    sc.rx_accept_partial_checksum = true;
    cfg.stack.apply(&mut sc);
    assert!(!sc.rx_accept_partial_checksum, "verify is the example's");
}

#[test]
fn check_config_command_accepts_the_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_cnet"))
        .args(["check-config"])
        .arg(example())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid (1 ports, 1 queues)"), "{stdout}");
}

const BASE_APPS: &str = r#""apps": { "udp_echo": { "port": 7 } }"#;

/// (file text, expected "line:column" prefix or "" for none, substrings of the message).
fn bad_cases() -> Vec<(String, &'static str, Vec<&'static str>)> {
    vec![
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"queus\": [0] }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.queus", "unknown field `queus`", "did you mean `queues`?"],
        ),
        (
            format!("{{\n  \"portz\": {{}},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["unknown field `portz`", "did you mean `ports`?"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\",\n    \"xskmap\": {{ \"uds\": \"run/afxdp.sock\" }} }} }},\n  {BASE_APPS}\n}}\n"),
            ":3:",
            vec!["ports.p.xskmap", "expected an absolute path"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"xskmap\": \"plugin\" }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.xskmap", "expected \"self\", \"uds\", \"pinned\""],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"xskmap\": \"uds\",\n    \"busy_poll\": {{ \"timeout_us\": 20, \"budget\": 64, \"prefer\": false }} }} }},\n  {BASE_APPS}\n}}\n"),
            ":3:",
            vec!["ports.p.busy_poll.prefer", "/config_busy_poll", "prefer must be true"],
        ),
        (
            "{\n  \"ports\": { \"p\": { \"interface\": \"vb\" } },\n  \"apps\": {\n    \"http\": { \"port\": 80, \"thread\": 2 },\n  },\n}\n".into(),
            ":4:",
            vec!["apps.http", "unknown field `thread`", "did you mean `threads`?"],
        ),
        (
            "{\n  \"ports\": { \"p\": { \"interface\": \"vb\" } },\n  \"apps\": {\n    \"tcp_echo\": { \"port\": 80 },\n    \"http\": { \"port\": 80 },\n  },\n}\n".into(),
            ":5:",
            vec!["apps.http.port", "TCP port 80 is taken by apps.tcp_echo"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\" }} }},\n  \"stack\": {{ \"rx_checksum\": \"accept_partial\" }},\n  {BASE_APPS}\n}}\n"),
            ":3:",
            vec!["stack.rx_checksum", "accept-partial"],
        ),
        (
            "{\n  \"ports\": { \"p\": { \"interface\": \"vb\" } },\n  \"apps\": { \"quic\": {} }\n}\n".into(),
            ":3:",
            vec!["apps.quic", "not available in this build"],
        ),
        (
            format!("{{\n  // comment\n  \"ports\": {{\n    \"p\": {{\n      \"interface\": \"vb\",\n      \"pool\": \"big\",\n    }},\n  }},\n  {BASE_APPS},\n}}\n"),
            ":6:",
            vec!["ports.p.pool", "no pool named \"big\""],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"addresses\": [\"198.18.0.300/24\"] }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.addresses[0]", "bad IPv4 address"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"bind\": \"zerocopy\" }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.bind", "unknown variant `zerocopy`", "did you mean `zero-copy`?"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\" }} }}\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["syntax error", "Expected comma"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"queues\": [0, 1, 0] }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.queues[2]", "queue 0 listed twice"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"a\": {{ \"interface\": \"vb\" }},\n    \"b\": {{ \"interface\": \"vb\" }} }},\n  {BASE_APPS}\n}}\n"),
            ":3:",
            vec!["ports.b.interface", "used by another port"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\" }} }},\n  \"threads\": [\n    {{ \"port\": \"p\", \"queue\": 3, \"cpus\": [0] }}\n  ],\n  {BASE_APPS}\n}}\n"),
            ":4:",
            vec!["threads[0].queue", "does not serve queue 3"],
        ),
        (
            format!("{{\n  \"pools\": {{ \"x\": {{ \"frames\": 1000 }} }},\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\" }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["pools.x.frames", "power of two"],
        ),
        (
            "{\n  \"ports\": { \"p\": { \"interface\": \"vb\" } },\n  \"apps\": {}\n}\n".into(),
            ":3:",
            vec!["apps", "no app configured"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\" }} }},\n  \"metrics\": {{ \"listen\": \"localhost\" }},\n  {BASE_APPS}\n}}\n"),
            ":3:",
            vec!["metrics.listen", "invalid socket address"],
        ),
        (
            format!("{{\n  \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"queues\": [\"0\"] }} }},\n  {BASE_APPS}\n}}\n"),
            ":2:",
            vec!["ports.p.queues[0]", "invalid type"],
        ),
        ("".into(), "", vec!["holds no JSON value"]),
    ]
}

#[test]
fn xskmap_sources_parse() {
    use cnet_apps::config::XskMap;
    let load = |x: &str| {
        let text = format!("{{ \"ports\": {{ \"p\": {{ \"interface\": \"vb\", \"xskmap\": {x} }} }}, {BASE_APPS} }}");
        let dir = std::env::temp_dir().join(format!("cnet-xskmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.jsonc");
        std::fs::write(&f, text).unwrap();
        Config::load(&f).map(|c| c.ports["p"].xskmap.clone())
    };
    assert_eq!(load("\"self\"").unwrap(), XskMap::SelfLoad);
    assert_eq!(load("\"uds\"").unwrap(), XskMap::Uds(None));
    assert_eq!(load("\"pinned\"").unwrap(), XskMap::Pinned(None));
    assert_eq!(
        load("{ \"uds\": \"/run/dp.sock\" }").unwrap(),
        XskMap::Uds(Some("/run/dp.sock".into()))
    );
    assert_eq!(
        load("{ \"pinned\": \"/bpf/maps\" }").unwrap(),
        XskMap::Pinned(Some("/bpf/maps".into()))
    );
    assert!(load("{ \"uds\": \"/a\", \"pinned\": \"/b\" }").is_err());
    assert!(load("{ \"fd\": \"/a\" }").is_err());
}

#[test]
fn bad_files_are_rejected_with_file_line_column_path_and_reason() {
    let cases = bad_cases();
    assert!(cases.len() >= 15);
    for (i, (text, at, wants)) in cases.into_iter().enumerate() {
        let name = format!("bad{i}.jsonc");
        let err = Config::parse(Path::new(&name), &text)
            .expect_err(&format!("case {i} must be rejected:\n{text}"))
            .to_string();
        assert!(err.starts_with(&format!("{name}{at}")), "case {i}: {err}");
        for w in wants {
            assert!(err.contains(w), "case {i}: {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn check_config_command_names_the_file_and_fails() {
    let dir = std::env::temp_dir().join(format!("cnet-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.jsonc");
    std::fs::write(
        &f,
        "{\n  \"ports\": { \"p\": { \"interface\": \"vb\", \"atach\": \"native\" } },\n  \"apps\": { \"udp_echo\": { \"port\": 7 } }\n}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cnet"))
        .arg("check-config")
        .arg(&f)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.jsonc:2:"), "{stderr}");
    assert!(stderr.contains("did you mean `attach`?"), "{stderr}");
    let missing = Command::new(env!("CARGO_BIN_EXE_cnet"))
        .args(["check-config", "/nonexistent/cnet.jsonc"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/cnet.jsonc: cannot read")
    );
}
