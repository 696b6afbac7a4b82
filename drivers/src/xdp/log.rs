//! libbpf's and libxdp's messages through `tracing` instead of straight to stderr.
//!
//! Both C libraries print with a callback (`libbpf_set_print`, `libxdp_set_print`) that receives
//! a `printf` format and a `va_list`; the callback here formats it with `vsnprintf` and hands the
//! line to `tracing` under the targets `libbpf` and `libxdp`, so a service's log filter and
//! format apply to them as to everything else. Levels: the libraries' WARN is `warn` (a real
//! failure, even when the library then falls back), INFO is `debug` (libbpf's ELF notes such as
//! "skipping unrecognized data section", libxdp's dispatcher fallback on a host without bpffs),
//! DEBUG is `trace`.
//!
//! Only on x86_64, where a `va_list` argument is a pointer to one `__va_list_tag` (the type the
//! bindings use); elsewhere the libraries keep their own printing.

/// Installs the callbacks once per process (later calls do nothing).
pub(crate) fn route_to_tracing() {
    #[cfg(target_arch = "x86_64")]
    imp::install();
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use libxdp_sys::__va_list_tag;
    use std::ffi::{c_char, c_int, CStr};
    use std::sync::Once;

    type PrintFn = Option<unsafe extern "C" fn(c_int, *const c_char, *mut __va_list_tag) -> c_int>;

    extern "C" {
        /// libc's `vsnprintf`: `ap` is a `va_list`, which on x86_64 is passed as a pointer to
        /// its one `__va_list_tag`.
        fn vsnprintf(
            buf: *mut c_char,
            n: usize,
            fmt: *const c_char,
            ap: *mut __va_list_tag,
        ) -> c_int;
        /// libbpf's print hook (in the libbpf that libxdp-sys builds and links; not in its
        /// bindings).
        fn libbpf_set_print(f: PrintFn) -> PrintFn;
    }

    /// Formats one message; `None` when `fmt` is null.
    ///
    /// # Safety
    /// `fmt` and `ap` as the libraries pass them to their print callback.
    unsafe fn format(fmt: *const c_char, ap: *mut __va_list_tag) -> Option<String> {
        if fmt.is_null() {
            return None;
        }
        let mut buf = [0 as c_char; 1024];
        // SAFETY: `buf` is writable for its length; `fmt`/`ap` come from the library, valid for
        // this one call; vsnprintf truncates and NUL-terminates.
        let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), fmt, ap) };
        if n < 0 {
            return None;
        }
        // SAFETY: vsnprintf NUL-terminated `buf`.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Some(s.to_string_lossy().trim_end().to_string())
    }

    macro_rules! callback {
        ($name:ident, $level:ty, $target:literal) => {
            unsafe extern "C" fn $name(
                level: $level,
                fmt: *const c_char,
                ap: *mut __va_list_tag,
            ) -> c_int {
                // SAFETY: called by the library with its format and arguments.
                let Some(msg) = (unsafe { format(fmt, ap) }) else {
                    return 0;
                };
                match level {
                    0 => tracing::warn!(target: $target, "{msg}"),
                    1 => tracing::debug!(target: $target, "{msg}"),
                    _ => tracing::trace!(target: $target, "{msg}"),
                }
                0
            }
        };
    }

    callback!(libbpf_print, c_int, "libbpf");
    callback!(libxdp_print, libxdp_sys::libxdp_print_level, "libxdp");

    pub(super) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: both setters store a function pointer; the callbacks are `extern "C"`
            // with the libraries' signatures and live for the whole program.
            unsafe {
                libbpf_set_print(Some(libbpf_print));
                libxdp_sys::libxdp_set_print(Some(libxdp_print));
            }
        });
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::ffi::c_char;

    extern "C" {
        /// libbpf formats through the installed callback (`libbpf_print` is libbpf's internal
        /// entry point for its messages).
        fn libbpf_print(level: i32, fmt: *const c_char, ...);
    }

    /// A subscriber that keeps what it gets.
    #[derive(Clone, Default)]
    struct Keep(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl std::io::Write for Keep {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(b).into_owned());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn libbpf_messages_reach_tracing_formatted() {
        super::route_to_tracing();
        let keep = Keep::default();
        let k = keep.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || k.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            // SAFETY: a NUL-terminated format with one %d and one %s, and matching arguments.
            unsafe {
                libbpf_print(
                    0,
                    c"cnet test: %d frames, %s\n".as_ptr(),
                    42i32,
                    c"ok".as_ptr(),
                )
            };
        });
        let got = keep.0.lock().unwrap().concat();
        assert!(got.contains("WARN"), "{got}");
        assert!(got.contains("libbpf"), "{got}");
        assert!(got.contains("cnet test: 42 frames, ok"), "{got}");
    }
}
