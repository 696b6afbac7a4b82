//! The privileged host side: network namespace, bpffs, bind mounts, ownership, socket options.
//! Everything this module sets up is recorded in a [`Host`] and undone in reverse order when it
//! is dropped.

use anyhow::{bail, Context, Result};
use cnet_apps::deviceplugin::wire::{int_opt, set_int_opt as setsockopt};
use cnet_drivers::xdp::XskProgram;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Moves this thread (call it before any other thread exists: the process) into the network
/// namespace at `path`. Only the network namespace: mounts stay in the caller's mount namespace,
/// so that processes started later see the bpffs and the sockets.
pub fn enter_netns(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    // SAFETY: setns on an open namespace file descriptor.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .with_context(|| format!("{}: NUL in path", p.display()))
}

/// What was set up, undone on drop: sockets unlinked, bind mounts unmounted, programs detached
/// (and unpinned), bpffs unmounted, directories removed (when empty).
#[derive(Default)]
pub struct Host {
    /// The loaded programs, by device.
    pub programs: Vec<(String, XskProgram)>,
    sockets: Vec<PathBuf>,
    binds: Vec<PathBuf>,
    bpffs: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Host {
    /// Creates `dir` (and missing parents) with `mode`, remembering what it created.
    pub fn mkdir(&mut self, dir: &Path, mode: u32) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.exists() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        for m in missing.into_iter().rev() {
            std::fs::create_dir(&m).with_context(|| format!("mkdir {}", m.display()))?;
            std::fs::set_permissions(&m, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", m.display()))?;
            self.dirs.push(m);
        }
        Ok(())
    }

    /// Mounts a fresh bpffs at `dir` (created), mode 0700 at its root as the plugin's per-device
    /// bpffs on the host.
    pub fn mount_bpffs(&mut self, dir: &Path) -> Result<()> {
        self.mkdir(dir, 0o700)?;
        let (src, target) = (cstr(Path::new("bpf"))?, cstr(dir)?);
        let opts = CString::new("mode=0700").expect("no NUL");
        // SAFETY: NUL-terminated strings alive during the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("mount -t bpf bpf {}", dir.display()));
        }
        self.bpffs.push(dir.to_path_buf());
        Ok(())
    }

    /// Bind-mounts the file `src` at `dst` (an empty file is created there first), as the
    /// kubelet mounts the plugin's pin into the container.
    pub fn bind_file(&mut self, src: &Path, dst: &Path) -> Result<()> {
        if dst.exists() {
            bail!("{} exists already", dst.display());
        }
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
        self.binds.push(dst.to_path_buf());
        let (s, d) = (cstr(src)?, cstr(dst)?);
        // SAFETY: NUL-terminated strings alive during the call; no fs type or data for a bind.
        let rc = unsafe {
            libc::mount(
                s.as_ptr(),
                d.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("mount --bind {} {}", src.display(), dst.display()));
        }
        Ok(())
    }

    /// Remembers a socket path to unlink.
    pub fn socket(&mut self, path: &Path) {
        self.sockets.push(path.to_path_buf());
    }

    /// Unlinks the sockets now (the plugin does so when its session ends).
    pub fn unlink_sockets(&mut self) {
        for s in self.sockets.drain(..) {
            let _ = std::fs::remove_file(&s);
        }
    }
}

fn umount(p: &Path) {
    let Ok(c) = cstr(p) else { return };
    // SAFETY: a NUL-terminated path alive during the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::warn!(path = %p.display(), error = %io::Error::last_os_error(), "umount failed");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.unlink_sockets();
        for b in self.binds.drain(..).rev() {
            umount(&b);
            let _ = std::fs::remove_file(&b);
        }
        // Unpins (while the bpffs is still mounted) and detaches.
        for (dev, p) in self.programs.drain(..) {
            if let Err(e) = p.detach() {
                tracing::warn!(dev, error = %e, "detaching the XDP program failed");
            }
        }
        for f in self.bpffs.drain(..).rev() {
            umount(&f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// `chown` to `uid` (its primary group unknown: the gid stays) and `chmod`.
pub fn own(path: &Path, uid: Option<u32>, mode: u32) -> Result<()> {
    if let Some(uid) = uid {
        std::os::unix::fs::chown(path, Some(uid), None)
            .with_context(|| format!("chown {uid} {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The plugin's `Configure_busy_poll` on the socket a pod sent: `SO_PREFER_BUSY_POLL` = 1 (its
/// failure is an error: nak), then `SO_BUSY_POLL` = `timeout` and `SO_BUSY_POLL_BUDGET` =
/// `budget`; if either of those fails, what was set is undone and the call still succeeds
/// (`Ok(false)`: the plugin acks anyway) unless undoing fails too.
pub fn configure_busy_poll(xsk: BorrowedFd<'_>, timeout: i32, budget: i32) -> io::Result<bool> {
    setsockopt(xsk, SO_PREFER_BUSY_POLL, 1)?;
    let failed = match setsockopt(xsk, SO_BUSY_POLL, timeout) {
        Err(e) => Some(("SO_BUSY_POLL", e)),
        Ok(()) => match setsockopt(xsk, SO_BUSY_POLL_BUDGET, budget) {
            Ok(()) => return Ok(true),
            Err(e) => {
                setsockopt(xsk, SO_BUSY_POLL, 0)?;
                Some(("SO_BUSY_POLL_BUDGET", e))
            }
        },
    };
    if let Some((what, e)) = failed {
        tracing::warn!(error = %e, "{what} failed: undone, acked anyway (as the plugin)");
    }
    setsockopt(xsk, SO_PREFER_BUSY_POLL, 0)?;
    Ok(false)
}

/// `prefer=<SO_PREFER_BUSY_POLL> busy_poll=<SO_BUSY_POLL>` as read back (`?` when unreadable;
/// `SO_BUSY_POLL_BUDGET` cannot be read with getsockopt).
pub fn read_busy_poll(xsk: BorrowedFd<'_>) -> String {
    let get = |o| int_opt(xsk, o).map_or("?".to_string(), |v| v.to_string());
    format!(
        "prefer={} busy_poll={}",
        get(SO_PREFER_BUSY_POLL),
        get(SO_BUSY_POLL)
    )
}
