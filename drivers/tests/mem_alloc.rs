//! The in-memory link allocates nothing per frame once warmed up.
//!
//! A counting global allocator counts heap calls made by the current thread while counting is on, so
//! other test threads and the harness do not disturb the count. Its own file: a global allocator is
//! per binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cnet_drivers::mem::{Impairments, LinkConfig, MemLink, MemPort};
use cnet_drivers::Port;
use cnet_stack::{Batch, Duration, Instant, MacAddr, Pool};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Forwards to the system allocator and counts this thread's calls while counting is on.
struct Counting;

fn count() {
    // `try_with`: the allocator may run while a thread's locals are being torn down. The cells are
    // const-initialised without destructors, so reaching them never allocates.
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = CALLS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counting touches only const thread-locals and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout, under the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` (every allocation here goes through it) with
        // `layout`, per the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        // SAFETY: as in `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap calls made by `f` on this thread.
fn heap_calls(f: impl FnOnce()) -> u64 {
    CALLS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    CALLS.with(Cell::get)
}

/// Sends `frames` frames each way in bursts of 32, one burst every 100 µs of virtual time, and
/// receives whatever is due; returns the time reached.
fn traffic(
    ports: &mut (MemPort, MemPort),
    pools: &mut (Pool, Pool),
    frames: usize,
    mut now: Instant,
) -> Instant {
    let mut sent = 0;
    let mut batch = Batch::new();
    while sent < frames {
        for _ in 0..32 {
            let f = pools.0.alloc_from(&[0x5a; 200]).expect("a's pool has room");
            batch.push(f).expect("batch of 32 fits");
        }
        ports.0.tx_burst(&mut pools.0, &mut batch, now).unwrap();
        for _ in 0..32 {
            let f = pools
                .1
                .alloc_from(&[0xa5; 1514])
                .expect("b's pool has room");
            batch.push(f).expect("batch of 32 fits");
        }
        ports.1.tx_burst(&mut pools.1, &mut batch, now).unwrap();
        sent += 32;
        now = now + Duration::from_micros(100);
        while ports.1.rx_burst(&mut pools.1, &mut batch, now).unwrap() > 0 {
            batch.free_all(&mut pools.1);
        }
        while ports.0.rx_burst(&mut pools.0, &mut batch, now).unwrap() > 0 {
            batch.free_all(&mut pools.0);
        }
    }
    now
}

#[test]
fn ten_thousand_frames_allocate_nothing_after_warm_up() {
    let impairments = Impairments {
        loss: 0.01,
        duplicate: 0.01,
        corrupt: 0.01,
        reorder: 0.05,
        reorder_delay: Duration::from_micros(200),
        delay: Duration::from_millis(1),
        jitter: Duration::from_micros(100),
        bandwidth: Some(1_000_000_000),
        queue_limit: 2048,
    };
    let config = LinkConfig::new(
        0x5eed,
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
    )
    .with_impairments(impairments);
    let mut ports = MemLink::pair(config).expect("valid config");
    let mut pools = (
        Pool::new(512, 2048, 192).expect("valid pool"),
        Pool::new(512, 2048, 192).expect("valid pool"),
    );

    // Warm-up: the wire buffers are allocated as the queue first deepens.
    let now = traffic(&mut ports, &mut pools, 5_000, Instant::ZERO);

    let mut end = now;
    let calls = heap_calls(|| end = traffic(&mut ports, &mut pools, 10_000, now));
    assert_eq!(calls, 0, "heap calls while moving 10 000 frames each way");

    // The run really moved frames, and every frame came back.
    let s = ports.0.tx_stats();
    assert!(s.delivered > 11_000, "{s:?}");
    assert!(s.lost > 0 && s.duplicated > 0 && s.reordered > 0, "{s:?}");
    let mut batch = Batch::new();
    let late = end + Duration::from_secs(1);
    while ports.1.rx_burst(&mut pools.1, &mut batch, late).unwrap() > 0 {
        batch.free_all(&mut pools.1);
    }
    while ports.0.rx_burst(&mut pools.0, &mut batch, late).unwrap() > 0 {
        batch.free_all(&mut pools.0);
    }
    assert_eq!(pools.0.available(), pools.0.capacity());
    assert_eq!(pools.1.available(), pools.1.capacity());

    // The counter does count: a fresh vector is a heap call.
    assert!(heap_calls(|| drop(std::hint::black_box(vec![1u8; 16]))) > 0);
}
