//! Tests of the redirect program: its shape, its behaviour in an interpreter of the
//! instructions it uses, and (as root) the kernel verifier's verdict.

use super::*;

/// A register of the interpreter below: a number or a typed pointer, as the verifier sees
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    N(u64),
    Ctx,
    Pkt(i64),
    End,
    Fp(i64),
    Map(i32),
    MapValue,
}

const ADDRS_FD: i32 = 3;
const XSKS_FD: i32 = 4;
const XDP_REDIRECT: u64 = 4;

/// Runs the program over `frame` received on `queue`, with `ours` in the address map; returns
/// the XDP action. Exactly the instructions the encoder emits; panics on anything else, on a
/// packet read outside the frame (a missing bounds check), or on a runaway program.
fn run(p: &[Insn], frame: &[u8], queue: u32, ours: &[Ipv4Addr]) -> u64 {
    let mut r = [V::N(0); 11];
    r[1] = V::Ctx;
    r[10] = V::Fp(0);
    let mut stack = [0u8; 512];
    let mut pc = 0usize;
    for _ in 0..1000 {
        let i = p[pc];
        let (d, sr) = (usize::from(i.dst()), usize::from(i.src()));
        let off = i64::from(i.off());
        let imm = i64::from(i.imm());
        pc += 1;
        let cmp = |a: V, b: V| -> std::cmp::Ordering {
            match (a, b) {
                (V::N(x), V::N(y)) => x.cmp(&y),
                (V::Pkt(x), V::End) => x.cmp(&(frame.len() as i64)),
                (V::MapValue, V::N(0)) => std::cmp::Ordering::Greater,
                other => panic!("comparison {other:?}"),
            }
        };
        let target = (pc as i64 + off) as usize;
        match i.code() {
            0xbf => r[d] = r[sr],
            0xb7 => r[d] = V::N(imm as u64),
            0x07 => {
                r[d] = match r[d] {
                    V::N(x) => V::N(x.wrapping_add(imm as u64)),
                    V::Pkt(o) => V::Pkt(o + imm),
                    V::Fp(o) => V::Fp(o + imm),
                    v => panic!("add to {v:?}"),
                }
            }
            code @ (0x61 | 0x69) => {
                let size = if code == 0x61 { 4 } else { 2 };
                r[d] = match (r[sr], off) {
                    (V::Ctx, 0) => V::Pkt(0),
                    (V::Ctx, 4) => V::End,
                    (V::Ctx, 16) => V::N(u64::from(queue)),
                    (V::Pkt(o), _) => {
                        let at = (o + off) as usize;
                        let b = frame.get(at..at + size).unwrap_or_else(|| {
                            panic!(
                                "unchecked read of {size} bytes at {at} in a {}-byte frame",
                                frame.len()
                            )
                        });
                        V::N(if size == 4 {
                            u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        } else {
                            u64::from(u16::from_ne_bytes([b[0], b[1]]))
                        })
                    }
                    other => panic!("load from {other:?}"),
                }
            }
            0x63 => match (r[d], r[sr]) {
                (V::Fp(o), V::N(x)) => {
                    let at = (512 + o + off) as usize;
                    stack[at..at + 4].copy_from_slice(&(x as u32).to_ne_bytes());
                }
                other => panic!("store {other:?}"),
            },
            0x18 => {
                r[d] = V::Map(i.imm());
                pc += 1;
            }
            0x2d => {
                if cmp(r[d], r[sr]).is_gt() {
                    pc = target;
                }
            }
            0x15 => {
                if cmp(r[d], V::N(imm as u64)).is_eq() {
                    pc = target;
                }
            }
            0x55 => {
                if cmp(r[d], V::N(imm as u64)).is_ne() {
                    pc = target;
                }
            }
            0x05 => pc = target,
            0x85 => {
                r[0] = match (i.imm(), r[1], r[2], r[3]) {
                    (helper::MAP_LOOKUP_ELEM, V::Map(ADDRS_FD), V::Fp(o), _) => {
                        let at = (512 + o) as usize;
                        let key: [u8; 4] = stack[at..at + 4].try_into().unwrap();
                        if ours.contains(&Ipv4Addr::from(key)) {
                            V::MapValue
                        } else {
                            V::N(0)
                        }
                    }
                    (helper::REDIRECT_MAP, V::Map(XSKS_FD), V::N(q), V::N(2)) => {
                        assert_eq!(q, u64::from(queue), "key = rx_queue_index");
                        V::N(XDP_REDIRECT)
                    }
                    other => panic!("call {other:?}"),
                };
                r[1..=5].fill(V::N(0xdead));
            }
            0x95 => match r[0] {
                V::N(x) => return x,
                v => panic!("returns {v:?}"),
            },
            c => panic!("opcode {c:#x}"),
        }
    }
    panic!("no exit within 1000 steps");
}

const OURS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

fn eth(ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 12];
    f.extend_from_slice(&ethertype);
    f.extend_from_slice(payload);
    f
}

fn arp(ptype: [u8; 2], target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1];
    a.extend_from_slice(&ptype);
    a.extend_from_slice(&[6, 4, 0, 1]);
    a.extend_from_slice(&[2, 0, 0, 0, 0, 1, 198, 18, 0, 1]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth([0x08, 0x06], &a)
}

fn ipv4(dst: Ipv4Addr) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1];
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&[0; 8]);
    eth([0x08, 0x00], &h)
}

#[test]
fn only_arp_and_ipv4_for_our_addresses_are_redirected() {
    let p = program(ADDRS_FD, XSKS_FD).unwrap();
    let verdict = |f: &[u8]| run(&p, f, 3, &[OURS]);
    let pass = u64::from(XDP_PASS as u32);
    assert_eq!(
        verdict(&arp([0x08, 0x00], OURS)),
        XDP_REDIRECT,
        "ARP for us"
    );
    assert_eq!(verdict(&arp([0x08, 0x00], OTHER)), pass, "ARP for the host");
    assert_eq!(verdict(&arp([0x86, 0xdd], OURS)), pass, "not IPv4 ARP");
    assert_eq!(verdict(&ipv4(OURS)), XDP_REDIRECT, "IPv4 to us");
    assert_eq!(verdict(&ipv4(OTHER)), pass, "IPv4 to the host");
    assert_eq!(verdict(&ipv4(Ipv4Addr::BROADCAST)), pass, "broadcast");
    assert_eq!(verdict(&eth([0x86, 0xdd], &[0; 40])), pass, "IPv6");
    assert_eq!(
        verdict(&eth([0x81, 0x00], &ipv4(OURS)[12..])),
        pass,
        "VLAN-tagged"
    );
    assert_eq!(run(&p, &ipv4(OURS), 3, &[]), pass, "empty map");
    // Every truncation: bounds-checked (the interpreter panics on a read past the end).
    for f in [arp([0x08, 0x00], OURS), ipv4(OURS)] {
        let full = if f[13] == 0x06 { 42 } else { 34 };
        for len in 0..f.len() {
            let want = if len >= full { XDP_REDIRECT } else { pass };
            assert_eq!(verdict(&f[..len]), want, "{len}-byte prefix");
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_verifier_accepts_the_program_and_its_log_comes_with_a_refusal() {
    if !is_root() {
        eprintln!("SKIP: loading BPF programs needs root (CAP_BPF)");
        return;
    }
    let xsks = map_create(
        libxdp_sys::bpf_map_type_BPF_MAP_TYPE_XSKMAP,
        c"t_xsks",
        4,
        4,
    )
    .expect("XSKMAP");
    let addrs =
        map_create(libxdp_sys::bpf_map_type_BPF_MAP_TYPE_HASH, c"t_addrs", 1, 4).expect("HASH");
    let p = program(addrs.as_raw_fd(), xsks.as_raw_fd()).unwrap();
    let fd = prog_load(&p).unwrap_or_else(|(e, log)| panic!("refused: {e}\n{log}"));
    assert!(prog_id(fd.as_fd()).unwrap() > 0);
    // The same program without its Ethernet bounds check: refused, and the log says why.
    let mut bad = p.clone();
    assert!(
        bad[5].is_jump(),
        "instruction 5 is the Ethernet bounds check"
    );
    bad[5] = Insn::mov64_imm(R0, 0);
    let (e, log) = prog_load(&bad).expect_err("the verifier refuses unchecked packet reads");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    assert!(log.contains("invalid access to packet"), "{log}");
}

#[test]
fn program_is_well_formed() {
    let p = program(3, 4).unwrap();
    assert_eq!(
        p.len(),
        37,
        "a tiny program (docs/DEPLOY.md gives its size)"
    );
    assert_eq!(p.last().unwrap().code(), Insn::exit().code());
    let lddw_second: Vec<usize> = p
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_lddw())
        .map(|(n, _)| n + 1)
        .collect();
    assert_eq!(lddw_second.len(), 2, "two map loads");
    for (n, i) in p.iter().enumerate() {
        if i.is_jump() {
            let to = n as i64 + 1 + i64::from(i.off());
            assert!(
                to > n as i64 && (to as usize) < p.len(),
                "jump {n} in range"
            );
            assert!(
                !lddw_second.contains(&(to as usize)),
                "jump {n} into an lddw"
            );
        }
    }
}
