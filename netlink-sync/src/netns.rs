//! Running code inside a network namespace.
//!
//! `setns(2)` with `CLONE_NEWNET` moves only the calling *thread*; sockets keep the namespace they
//! were created in for their whole life. So the pattern is: a dedicated thread enters the namespace,
//! opens its sockets there, and may then keep working or hand the file descriptors to other
//! threads. [`crate::NetlinkSync`] does this itself when [`crate::SyncConfig::netns`] is set;
//! other crates (AF_XDP sockets in tests, for instance) can use [`run_in_netns`].
//!
//! Entering a namespace needs `CAP_SYS_ADMIN`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` mounts the namespace `NAME`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into the network namespace at `path` (a file such as
/// `/run/netns/NAME` or `/proc/PID/ns/net`). Sockets opened by this thread afterwards live there.
///
/// Call it only on a thread you own and will not hand back to a pool: the thread stays in the
/// namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns takes a valid open descriptor and a namespace type; no memory is shared.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a fresh thread that first enters the network namespace at `path`, and returns its
/// result. The calling thread's namespace does not change. A panic in `f` is resumed here.
pub fn run_in_netns<T, F>(path: &Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| -> io::Result<T> {
            enter_netns(path)?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
