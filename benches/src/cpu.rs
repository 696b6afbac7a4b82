//! The calling thread's CPU time, for figures that must not count the time this thread waited
//! for a core.
//!
//! On a shared machine (2 vCPUs, other jobs compiling) a single-threaded benchmark loses the core
//! for whole scheduler slices, and wall clock then measures the neighbours as much as the stack.
//! Both stacks of a benchmark run on the calling thread, so `CLOCK_THREAD_CPUTIME_ID` charges each
//! exactly the time its own code (and the link's) ran. What it cannot remove is the neighbours'
//! cache pollution, which wall clock has too.

/// CPU seconds the calling thread has used so far (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`).
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows
    // (the call cannot fail for it, and a failure would leave `ts` at zero, not corrupt memory).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time advances with work, and not with sleeping.
    #[test]
    fn counts_work_not_sleep() {
        let t0 = thread_cpu_secs();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = thread_cpu_secs() - t0;
        assert!(slept < 0.03, "sleeping cost {slept} s of CPU");
        let t1 = thread_cpu_secs();
        let mut x = 0u64;
        while thread_cpu_secs() - t1 < 0.02 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && thread_cpu_secs() - t1 >= 0.02);
    }
}
