//! Replays every committed corpus and regression input through its target, so `cargo test`
//! guards against regressions without a fuzzer. A failing file is named in the panic message.
//! Inputs of open findings (bugs not fixed yet, `fuzz/regressions-open/NAME/`) replay in ignored
//! tests, one per finding: `cargo test -p cnet-fuzz-targets -- --ignored` shows them failing.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/targets has a parent")
        .to_path_buf()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Replays every corpus and regression input of `name`; a hang fails after 60 s instead of
/// stalling the suite.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        for path in files(&fuzz_dir().join(kind).join(name)) {
            replay_with_deadline(&path, target, 60);
            n += 1;
        }
    }
    n
}

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    for &(name, target) in cnet_fuzz_targets::TARGETS {
        let n = replay(name, target);
        assert!(n > 0, "target {name} has no corpus");
        eprintln!("{name}: {n} inputs replayed");
    }
}

#[test]
fn empty_and_tiny_inputs_are_fine() {
    for &(_, target) in cnet_fuzz_targets::TARGETS {
        target(&[]);
        for b in 0..=255u8 {
            target(&[b]);
        }
    }
}

/// Finding 1 of docs/FUZZING.md (fixed): a protocol-unreachable about a reassembled datagram
/// quoted from the wrong offset when its first fragment carried IP options and its last did not
/// (the last fragment's header length was used to find the head fragment's header).
#[test]
fn reassembled_datagram_is_quoted_from_its_first_header() {
    // Unknown protocol; fragment 0 (8 bytes, 4 bytes of options), then the last fragment at 8.
    cnet_fuzz_targets::ipv4_frags(&[
        1, 0x05, 0x80, 0x00, 0x00, 0x08, 0x01, 0x00, 0x01, 0x00, 0x08,
    ]);
}

/// Runs `data` through `target` on a thread and fails if it panics or does not finish within
/// `secs` (a hang), naming `path`.
fn replay_with_deadline(path: &Path, target: fn(&[u8]), secs: u64) {
    let data = std::fs::read(path).expect("readable regression file");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| target(&data));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(true) => {}
        Ok(false) => panic!("{} fails", path.display()),
        Err(_) => panic!("{} did not finish in {secs} s (hang)", path.display()),
    }
}

/// Finding 7 of docs/FUZZING.md (fixed): `tcp_flush` looped for ever when a connection's output
/// found the tx queue nearly full (`tcp_send_data` touched the connection again, `tcp_flush`
/// popped it again). Replayed with a deadline so that a regression fails instead of hanging.
#[test]
fn tcp_flush_does_not_loop_when_the_tx_queue_is_nearly_full() {
    let path = fuzz_dir()
        .join("regressions")
        .join("stack")
        .join("tcp-flush-loops-when-tx-queue-nearly-full");
    replay_with_deadline(&path, cnet_fuzz_targets::stack, 30);
}
