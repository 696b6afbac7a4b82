//! Runs the upstream packetdrill TCP scripts against cnet (issue #14) through
//! `scripts/packetdrill.sh`, and fails when a script listed in `passing.txt` (the ratchet) stops
//! passing. Skips, with a message, when packetdrill cannot be built here (no tarball, no
//! bison/flex) or network namespaces cannot be made (not root).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cdylib cargo built beside this test binary (target/<profile>/libcnet_packetdrill.so).
fn library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let lib = profile_dir.join("libcnet_packetdrill.so");
    lib.exists().then_some(lib)
}

#[test]
fn upstream_scripts_do_not_regress() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP packetdrill: needs root for its network namespaces");
        return;
    }
    let Some(lib) = library() else {
        eprintln!("SKIP packetdrill: libcnet_packetdrill.so not found beside the test binary");
        return;
    };
    let out = std::env::temp_dir().join(format!("cnet-packetdrill-{}", std::process::id()));
    let run = Command::new("bash")
        .arg(root().join("scripts/packetdrill.sh"))
        .env("PACKETDRILL_LIB", &lib)
        .env("PACKETDRILL_OUT", &out)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    if run.status.code() == Some(2) {
        eprintln!(
            "SKIP packetdrill: cannot build or run packetdrill: {}",
            stderr.trim()
        );
        let _ = std::fs::remove_dir_all(&out);
        return;
    }
    assert!(
        run.status.success(),
        "packetdrill.sh failed:\n{stdout}\n{stderr}"
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .collect();
    let ratchet =
        std::fs::read_to_string(root().join("tests/packetdrill/passing.txt")).expect("passing.txt");
    let want: Vec<&str> = ratchet
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let lost: Vec<&&str> = want.iter().filter(|s| !passed.contains(s)).collect();
    let gained: Vec<&&str> = passed.iter().filter(|s| !want.contains(s)).collect();
    eprintln!(
        "{}",
        stdout.lines().last().unwrap_or("packetdrill: no summary")
    );
    if !gained.is_empty() {
        eprintln!("newly passing (add to tests/packetdrill/passing.txt): {gained:?}");
    }
    if lost.is_empty() {
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(
        lost.is_empty(),
        "packetdrill scripts that passed no longer do (logs in {}): {lost:?}",
        out.join("logs").display()
    );
    assert!(passed.len() >= want.len());
}

/// cnet's own scripts (`tests/packetdrill/cnet/`: RFC 5961 challenge ACKs, zero-window probing,
/// PAWS), for what upstream does not cover: every one must pass.
#[test]
fn cnet_scripts_pass() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP packetdrill: needs root for its network namespaces");
        return;
    }
    let Some(lib) = library() else {
        eprintln!("SKIP packetdrill: libcnet_packetdrill.so not found beside the test binary");
        return;
    };
    let out = std::env::temp_dir().join(format!("cnet-packetdrill-own-{}", std::process::id()));
    let dir = root().join("tests/packetdrill/cnet");
    let run = Command::new("bash")
        .arg(root().join("scripts/packetdrill.sh"))
        .arg(&dir)
        .env("PACKETDRILL_LIB", &lib)
        .env("PACKETDRILL_OUT", &out)
        .env("PACKETDRILL_SKIP", "none")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    if run.status.code() == Some(2) {
        eprintln!(
            "SKIP packetdrill: cannot build or run packetdrill: {}",
            stderr.trim()
        );
        let _ = std::fs::remove_dir_all(&out);
        return;
    }
    let scripts = std::fs::read_dir(&dir)
        .expect("tests/packetdrill/cnet")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pkt"))
        })
        .count();
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(
        run.status.success() && passed == scripts && scripts > 0,
        "cnet's packetdrill scripts: {passed} of {scripts} pass (logs in {}):\n{stdout}\n{stderr}",
        out.join("logs").display()
    );
    let _ = std::fs::remove_dir_all(&out);
}
