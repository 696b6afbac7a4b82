//! cnet's own XDP redirect program ([`XskMapSource::Redirect`](super::XskMapSource::Redirect)):
//! ARP and IPv4 for the stack's own addresses go to the AF_XDP socket of the receiving queue,
//! everything else to the kernel (`XDP_PASS`), so a host keeps its SSH and other traffic on a netdev
//! it shares with cnet.
//!
//! The program is built from instructions in Rust ([`super::bpf`]), loaded with `bpf_prog_load`
//! (the verifier's log comes back in the error when it refuses) and attached through a BPF link
//! (`bpf_link_create`, `BPF_XDP`, native or generic mode).
//! Its two maps:
//! - `cnet_xsks` (XSKMAP, key = queue id, value = AF_XDP socket): each port inserts its socket;
//!   the kernel removes the entry when the socket closes.
//! - `cnet_addrs` (HASH, key = IPv4 address as on the wire, value unused): the stack's unicast
//!   addresses, kept equal to the union of what every queue's stack owns
//!   ([`RedirectProgram::set_queue_addrs`], called from `Port::local_addrs_changed`).
//!
//! What the program does, per frame (bounds-checked against `data_end` before every read, as the
//! verifier requires):
//! 1. Ethernet header shorter than 14 bytes: pass.
//! 2. Ethertype 0x0806 (ARP, RFC 826): only IPv4-over-Ethernet ARP (htype 1, ptype 0x0800, hlen 6,
//!    plen 4); redirect when the target protocol address is in `cnet_addrs` (requests for our
//!    addresses and replies to our own requests), else pass (the kernel's ARP).
//! 3. Ethertype 0x0800 (IPv4): redirect when the destination address is in `cnet_addrs`, else
//!    pass. Fragments, options and every protocol follow the address.
//! 4. Anything else (IPv6, VLAN tags, LLDP...): pass.
//!
//! Redirect = `bpf_redirect_map(cnet_xsks, rx_queue_index, XDP_PASS)`: a queue without a cnet
//! socket passes to the kernel.
//!
//! **Broadcast and multicast** (255.255.255.255, subnet-directed broadcasts, 224.0.0.0/4) are left
//! to the kernel: one XDP verdict cannot give a frame to both, and the host's DHCP client, mDNS
//! and routing daemons need them on a shared netdev. cnet joins no multicast group and ignores
//! broadcast pings (RFC 1122 3.2.2.6), so it loses only broadcast UDP, which it does not need.
//!
//! One program per interface and network namespace, shared by every queue's port through an `Arc`;
//! the last port to go closes the link, which detaches it. Why a link rather than
//! `bpf_xdp_attach` (netlink): a link-attached program cannot be replaced or removed behind cnet's
//! back (`ip link set dev X xdp off` answers `EBUSY` while cnet runs), so "detach only if it is
//! still ours" holds by construction, and the kernel detaches it when the process dies, even by
//! SIGKILL: no stale program blocks the next start. (On kernel 6.18, `bpf_xdp_detach` with
//! `old_prog_fd`, the netlink way to detach only one's own program, answered `EINVAL`.)

use super::bpf::{helper, reg::*, Asm, AsmError, Cond, Insn, Size};
use super::{AttachMode, XdpConfigError, XdpError};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Addresses the program holds at most (`cnet_addrs` entries).
pub const MAX_ADDRS: u32 = 256;
/// XSKMAP entries at least (queue ids 0..=255; more when a port asks for a higher queue).
const MIN_QUEUES: u32 = 256;
/// Name of the address map (`bpftool map show name cnet_addrs`).
pub const ADDR_MAP_NAME: &str = "cnet_addrs";
/// Name of the program (`bpftool prog show name cnet_redirect`).
pub const PROG_NAME: &str = "cnet_redirect";

// `struct xdp_md` offsets.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE_INDEX: i16 = 16;
// XDP actions.
const XDP_PASS: i32 = 2;
// XDP attach mode flags (linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// A value as `ldx` reads it from the wire bytes `b` (host byte order), for comparisons.
fn wire_u16(b: [u8; 2]) -> i32 {
    i32::from(u16::from_ne_bytes(b))
}
fn wire_u32(b: [u8; 4]) -> i32 {
    // The constants compared are below 2^31 on either byte order, so the sign-extended immediate
    // equals the zero-extended load.
    u32::from_ne_bytes(b) as i32
}

/// The program's instructions, with the map fds in its `lddw`s.
pub(crate) fn program(addrs_fd: i32, xsks_fd: i32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::default();
    let (pass, arp, ipv4, lookup) = (a.new_label(), a.new_label(), a.new_label(), a.new_label());
    a.push([
        Insn::mov64_reg(R6, R1),                 // r6 = ctx (kept across calls)
        Insn::ldx(Size::W, R2, R6, MD_DATA),     // r2 = data
        Insn::ldx(Size::W, R3, R6, MD_DATA_END), // r3 = data_end
        Insn::mov64_reg(R4, R2),                 // r4 = data + 14
        Insn::add64_imm(R4, 14),                 //
    ]);
    a.jmp_reg(Cond::Gt, R4, R3, pass); //          no full Ethernet header: pass
    a.push([Insn::ldx(Size::H, R5, R2, 12)]); //    r5 = ethertype
    a.jmp_imm(Cond::Eq, R5, wire_u16([0x08, 0x00]), ipv4);
    a.jmp_imm(Cond::Ne, R5, wire_u16([0x08, 0x06]), pass);
    // ARP: 28 bytes after the Ethernet header.
    a.label(arp);
    a.push([Insn::mov64_reg(R4, R2), Insn::add64_imm(R4, 14 + 28)]);
    a.jmp_reg(Cond::Gt, R4, R3, pass);
    a.push([Insn::ldx(Size::W, R5, R2, 14)]); //    htype, ptype
    a.jmp_imm(Cond::Ne, R5, wire_u32([0, 1, 0x08, 0x00]), pass);
    a.push([Insn::ldx(Size::H, R5, R2, 18)]); //    hlen, plen
    a.jmp_imm(Cond::Ne, R5, wire_u16([6, 4]), pass);
    a.push([Insn::ldx(Size::W, R5, R2, 14 + 24)]); // r5 = target protocol address
    a.ja(lookup);
    // IPv4: the destination address ends at byte 20 of the header.
    a.label(ipv4);
    a.push([Insn::mov64_reg(R4, R2), Insn::add64_imm(R4, 14 + 20)]);
    a.jmp_reg(Cond::Gt, R4, R3, pass);
    a.push([Insn::ldx(Size::W, R5, R2, 14 + 16)]); // r5 = destination address
                                                   // Is r5 one of ours?
    a.label(lookup);
    a.push([Insn::stx_w(R10, -4, R5)]); //          key on the stack
    a.push(Insn::ld_map_fd(R1, addrs_fd));
    a.push([
        Insn::mov64_reg(R2, R10),
        Insn::add64_imm(R2, -4),
        Insn::call(helper::MAP_LOOKUP_ELEM),
    ]);
    a.jmp_imm(Cond::Eq, R0, 0, pass); //            not ours: pass
    a.push([Insn::ldx(Size::W, R2, R6, MD_RX_QUEUE_INDEX)]);
    a.push(Insn::ld_map_fd(R1, xsks_fd));
    a.push([
        Insn::mov64_imm(R3, XDP_PASS), //           no socket on this queue: pass
        Insn::call(helper::REDIRECT_MAP),
        Insn::exit(),
    ]);
    a.label(pass);
    a.push([Insn::mov64_imm(R0, XDP_PASS), Insn::exit()]);
    a.finish()
}

fn neg_errno(rc: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(rc.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EINVAL))
}

fn owned_fd(rc: libc::c_int) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(neg_errno(rc));
    }
    // SAFETY: a non-negative return of a libbpf fd-creating call is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

fn map_create(
    kind: libxdp_sys::bpf_map_type,
    name: &CStr,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; null opts are allowed (defaults).
    owned_fd(unsafe {
        libxdp_sys::bpf_map_create(
            kind,
            name.as_ptr(),
            4,
            value_size,
            max_entries,
            std::ptr::null(),
        )
    })
}

/// Loads `insns` as an XDP program; on failure, loads again with the verifier's log on and
/// returns it with the error.
fn prog_load(insns: &[Insn]) -> Result<OwnedFd, (io::Error, String)> {
    let name = CString::new(PROG_NAME).expect("no NUL");
    let license = c"Dual BSD/GPL";
    let load = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        // SAFETY: zero is a valid value for every field of the options struct (integers and
        // null pointers).
        let mut opts: libxdp_sys::bpf_prog_load_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libxdp_sys::bpf_prog_load_opts>();
        if let Some(buf) = log {
            opts.log_level = 1;
            opts.log_size = buf.len() as u32;
            opts.log_buf = buf.as_mut_ptr().cast();
        }
        // SAFETY: `Insn` has the layout of `struct bpf_insn` (checked by the encoder's tests);
        // `insns` and the log buffer (if any, of `log_size` bytes) outlive the call; the strings
        // are NUL-terminated.
        owned_fd(unsafe {
            libxdp_sys::bpf_prog_load(
                libxdp_sys::bpf_prog_type_BPF_PROG_TYPE_XDP,
                name.as_ptr(),
                license.as_ptr(),
                insns.as_ptr().cast(),
                insns.len(),
                &mut opts,
            )
        })
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut buf = vec![0u8; 64 * 1024];
            let again = load(Some(&mut buf));
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            let log = String::from_utf8_lossy(&buf[..end]).trim().to_string();
            match again {
                // Loaded the second time (a transient failure): use it.
                Ok(fd) => Ok(fd),
                Err(e) => Err((if log.is_empty() { first } else { e }, log)),
            }
        }
    }
}

/// The kernel's id of a loaded program.
fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: zero is valid for every field of the info struct.
    let mut info: libxdp_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libxdp_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is writable for `len` bytes; no array pointers are set, so the kernel
    // writes nothing else.
    let rc = unsafe { libxdp_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(neg_errno(rc));
    }
    Ok(info.id)
}

/// `(st_dev, st_ino)` of the calling thread's network namespace.
fn current_netns() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// Attaches `prog` to `ifindex` in `mode` through a BPF link (`BPF_LINK_CREATE`, Linux >= 5.9):
/// `EBUSY` when a program is already attached.
fn attach_link(prog: BorrowedFd<'_>, ifindex: u32, mode: AttachMode) -> io::Result<OwnedFd> {
    // SAFETY: zero is valid for every field of the options struct (integers, null pointers).
    let mut opts: libxdp_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libxdp_sys::bpf_link_create_opts>();
    opts.flags = xdp_flags(mode);
    // SAFETY: `prog` is an open program fd, `opts` a valid options struct.
    owned_fd(unsafe {
        libxdp_sys::bpf_link_create(
            prog.as_raw_fd(),
            ifindex as libc::c_int,
            libxdp_sys::bpf_attach_type_BPF_XDP,
            &opts,
        )
    })
}

fn xdp_flags(mode: AttachMode) -> u32 {
    match mode {
        AttachMode::Generic => XDP_FLAGS_SKB_MODE,
        _ => XDP_FLAGS_DRV_MODE,
    }
}

/// The index of `ifname` in the calling thread's network namespace.
fn lookup(ifname: &str) -> Result<u32, XdpError> {
    let c = CString::new(ifname).map_err(|_| XdpConfigError::BadIfname(ifname.into()))?;
    super::sys::ifindex(&c).map_err(|source| XdpError::NoSuchInterface {
        ifname: ifname.into(),
        source,
    })
}

/// Turns an I/O error of step `what` into [`XdpError::Program`].
fn program_error(ifname: &str, what: &'static str) -> impl FnOnce(io::Error) -> XdpError {
    let ifname = ifname.to_string();
    move |source| XdpError::Program {
        ifname,
        what,
        source,
    }
}

/// The id of the XDP program attached to `ifindex` (any mode), 0 when none.
fn attached_id(ifindex: u32) -> io::Result<u32> {
    let mut id = 0u32;
    // SAFETY: `id` is a writable u32.
    let rc = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex as libc::c_int, 0, &mut id) };
    if rc != 0 {
        return Err(neg_errno(rc));
    }
    Ok(id)
}

/// Who holds which addresses, and what the map holds.
#[derive(Debug, Default)]
struct AddrState {
    by_queue: BTreeMap<u32, BTreeSet<Ipv4Addr>>,
    in_map: BTreeSet<Ipv4Addr>,
}

/// cnet's redirect program attached to one interface, with its maps. See the module docs.
#[derive(Debug)]
pub struct RedirectProgram {
    ifname: String,
    ifindex: u32,
    /// The BPF link attaching the program to the interface (it holds the program): closing it
    /// (drop) detaches the program, also when the process dies; nobody can replace a
    /// link-attached program meanwhile. Only held.
    _link: OwnedFd,
    mode: AttachMode,
    prog_id: u32,
    xsks: OwnedFd,
    addrs: OwnedFd,
    state: Mutex<AddrState>,
}

type Key = ((u64, u64), u32);

/// Programs attached by this process, by (network namespace, ifindex): the ports of one interface
/// share one.
static ATTACHED: Mutex<Vec<(Key, Weak<RedirectProgram>)>> = Mutex::new(Vec::new());

impl RedirectProgram {
    /// The program on `ifname` (in the calling thread's network namespace): the one this process
    /// already attached there, or a new one loaded and attached in `mode` (`Auto`: native, then
    /// generic when the driver refuses). `queues`: the highest queue id a port will use + 1.
    ///
    /// Errors: another XDP program already attached ([`XdpError::Program`] with `EBUSY`), the
    /// verifier refusing the program ([`XdpError::ProgramLoad`], with its log), no privilege
    /// (`EPERM`: needs CAP_BPF + CAP_NET_ADMIN, or root).
    pub fn attach(
        ifname: &str,
        mode: AttachMode,
        queues: u32,
    ) -> Result<Arc<RedirectProgram>, XdpError> {
        let ifindex = lookup(ifname)?;
        let err = |what| program_error(ifname, what);
        let netns = current_netns().map_err(err("network namespace"))?;
        let mut all = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = all
            .iter()
            .find(|(k, _)| *k == (netns, ifindex))
            .and_then(|(_, w)| w.upgrade())
        {
            if mode != AttachMode::Auto && mode != p.mode {
                tracing::warn!(ifname, attached = ?p.mode, wanted = ?mode,
                    "redirect program already attached in another mode; sharing it");
            }
            return Ok(p);
        }
        let xsks = map_create(
            libxdp_sys::bpf_map_type_BPF_MAP_TYPE_XSKMAP,
            c"cnet_xsks",
            4,
            queues.max(MIN_QUEUES),
        )
        .map_err(err("creating the XSKMAP"))?;
        let addrs = map_create(
            libxdp_sys::bpf_map_type_BPF_MAP_TYPE_HASH,
            c"cnet_addrs",
            1,
            MAX_ADDRS,
        )
        .map_err(err("creating the address map"))?;
        let insns = program(addrs.as_raw_fd(), xsks.as_raw_fd())
            .map_err(|e| err("assembling")(io::Error::other(e)))?;
        let prog = prog_load(&insns).map_err(|(source, log)| XdpError::ProgramLoad {
            ifname: ifname.into(),
            source,
            log,
        })?;
        let prog_id = prog_id(prog.as_fd()).map_err(err("bpf_prog_get_info_by_fd"))?;
        let tries: &[AttachMode] = match mode {
            AttachMode::Auto => &[AttachMode::Native, AttachMode::Generic],
            AttachMode::Native => &[AttachMode::Native],
            AttachMode::Generic => &[AttachMode::Generic],
        };
        let mut attached = None;
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for (i, &m) in tries.iter().enumerate() {
            match attach_link(prog.as_fd(), ifindex, m) {
                Ok(l) => {
                    attached = Some((m, l));
                    break;
                }
                Err(e) => last = e,
            }
            if matches!(last.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) {
                let id = attached_id(ifindex).unwrap_or(0);
                tracing::error!(ifname, prog_id = id,
                    "another XDP program is attached; detach it (`ip link set dev {ifname} xdp off`) or use xskmap \"uds\"/\"pinned\"");
                break;
            }
            if let Some(next) = tries.get(i + 1) {
                tracing::info!(ifname, mode = ?m, next = ?next, error = %last,
                    "XDP attach mode refused, falling back");
            }
        }
        let Some((mode, link)) = attached else {
            return Err(err("attaching (BPF_LINK_CREATE)")(last));
        };
        tracing::info!(ifname, ?mode, "cnet redirect program attached");
        let p = Arc::new(RedirectProgram {
            ifname: ifname.into(),
            ifindex,
            _link: link,
            mode,
            prog_id,
            xsks,
            addrs,
            state: Mutex::new(AddrState::default()),
        });
        all.push(((netns, ifindex), Arc::downgrade(&p)));
        Ok(p)
    }

    /// The XSKMAP the ports insert their sockets into.
    pub fn xsk_map(&self) -> BorrowedFd<'_> {
        self.xsks.as_fd()
    }

    /// The mode the program is attached in (native or generic).
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The kernel's id of the program (`bpftool prog show id N`).
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Interface index (in the namespace the program was attached in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The addresses redirected now.
    pub fn addrs(&self) -> Vec<Ipv4Addr> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.in_map.iter().copied().collect()
    }

    /// Sets the addresses queue `queue`'s stack owns; the map becomes the union over every queue.
    /// Broadcast, multicast and unspecified addresses are ignored (left to the kernel). On errors
    /// (more than [`MAX_ADDRS`] addresses: `E2BIG`) the rest is still applied and the first error
    /// returned.
    pub fn set_queue_addrs(
        &self,
        queue: u32,
        addrs: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Result<(), XdpError> {
        let mine: BTreeSet<Ipv4Addr> = addrs
            .into_iter()
            .filter(|a| !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast())
            .collect();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.by_queue.insert(queue, mine);
        let want: BTreeSet<Ipv4Addr> = s.by_queue.values().flatten().copied().collect();
        let mut first = None;
        let add: Vec<Ipv4Addr> = want.difference(&s.in_map).copied().collect();
        let del: Vec<Ipv4Addr> = s.in_map.difference(&want).copied().collect();
        for a in del {
            let key = u32::from_ne_bytes(a.octets());
            // SAFETY: the key points to a u32, the map's key size.
            let rc = unsafe {
                libxdp_sys::bpf_map_delete_elem(self.addrs.as_raw_fd(), (&key as *const u32).cast())
            };
            if rc == 0 || neg_errno(rc).raw_os_error() == Some(libc::ENOENT) {
                s.in_map.remove(&a);
                tracing::info!(ifname = %self.ifname, addr = %a, "address no longer redirected to cnet");
            } else {
                first.get_or_insert((a, neg_errno(rc)));
            }
        }
        for a in add {
            let key = u32::from_ne_bytes(a.octets());
            let one = 1u8;
            // SAFETY: key and value point to a u32 and a u8, the map's key and value sizes.
            let rc = unsafe {
                libxdp_sys::bpf_map_update_elem(
                    self.addrs.as_raw_fd(),
                    (&key as *const u32).cast(),
                    (&one as *const u8).cast(),
                    libxdp_sys::BPF_ANY as u64,
                )
            };
            if rc == 0 {
                s.in_map.insert(a);
                tracing::info!(ifname = %self.ifname, addr = %a, "address redirected to cnet");
            } else {
                first.get_or_insert((a, neg_errno(rc)));
            }
        }
        match first {
            None => Ok(()),
            Some((addr, source)) => Err(XdpError::AddrMap { addr, source }),
        }
    }
}

impl Drop for RedirectProgram {
    fn drop(&mut self) {
        // The link's descriptor closes after this: the kernel detaches the program then.
        tracing::info!(ifname = %self.ifname, "cnet redirect program detached");
    }
}

/// The addresses in the `cnet_addrs` map of the cnet redirect program attached to `ifname` (in
/// the calling thread's namespace), whoever attached it; `None` when no cnet redirect program is
/// attached there. For diagnostics and tests.
pub fn attached_addrs(ifname: &str) -> Result<Option<Vec<Ipv4Addr>>, XdpError> {
    let ifindex = lookup(ifname)?;
    let err = |what| program_error(ifname, what);
    let id = attached_id(ifindex).map_err(err("bpf_xdp_query_id"))?;
    if id == 0 {
        return Ok(None);
    }
    // SAFETY: plain call; the result is checked.
    let prog = owned_fd(unsafe { libxdp_sys::bpf_prog_get_fd_by_id(id) })
        .map_err(err("bpf_prog_get_fd_by_id"))?;
    let mut map_ids = [0u32; 8];
    // SAFETY: zero is valid for every field of the info struct.
    let mut info: libxdp_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    info.nr_map_ids = map_ids.len() as u32;
    info.map_ids = map_ids.as_mut_ptr() as u64;
    let mut len = std::mem::size_of::<libxdp_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most `nr_map_ids` ids to
    // `map_ids`, which has that many slots and outlives the call.
    let rc = unsafe { libxdp_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 {
        return Err(err("bpf_prog_get_info_by_fd")(neg_errno(rc)));
    }
    if !c_name_is(&info.name, PROG_NAME) {
        return Ok(None);
    }
    let n = (info.nr_map_ids as usize).min(map_ids.len());
    for &mid in &map_ids[..n] {
        // SAFETY: plain call; the result is checked.
        let Ok(map) = owned_fd(unsafe { libxdp_sys::bpf_map_get_fd_by_id(mid) }) else {
            continue;
        };
        // SAFETY: zero is valid for every field of the info struct.
        let mut mi: libxdp_sys::bpf_map_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libxdp_sys::bpf_map_info>() as u32;
        // SAFETY: `mi` is writable for `len` bytes.
        let rc = unsafe { libxdp_sys::bpf_map_get_info_by_fd(map.as_raw_fd(), &mut mi, &mut len) };
        if rc != 0 || !c_name_is(&mi.name, ADDR_MAP_NAME) {
            continue;
        }
        return map_keys(map.as_fd())
            .map(Some)
            .map_err(err("reading the address map"));
    }
    Ok(Some(Vec::new()))
}

fn c_name_is(name: &[libc::c_char; 16], want: &str) -> bool {
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    bytes == want.as_bytes()
}

/// Every key of a u32-keyed map, as IPv4 addresses (bounded by [`MAX_ADDRS`] + 1 steps).
fn map_keys(map: BorrowedFd<'_>) -> io::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    let mut key: Option<u32> = None;
    for _ in 0..=MAX_ADDRS {
        let mut next = 0u32;
        let prev = key.as_ref().map_or(std::ptr::null(), |k| k as *const u32);
        // SAFETY: `prev` is null (first key) or points to a u32 key; `next` is a writable u32.
        let rc = unsafe {
            libxdp_sys::bpf_map_get_next_key(
                map.as_raw_fd(),
                prev.cast(),
                (&mut next as *mut u32).cast(),
            )
        };
        if rc != 0 {
            let e = neg_errno(rc);
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(e);
        }
        out.push(Ipv4Addr::from(next.to_ne_bytes()));
        key = Some(next);
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[path = "redirect_tests.rs"]
mod tests;
