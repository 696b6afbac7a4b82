//! No heap allocation per packet in steady state: after warm-up, 10 000 UDP echoes between two
//! stacks over the in-memory link (ARP, IPv4, UDP, socket queues, zero-copy echo) allocate nothing.

use cnet_drivers::host::Host;
use cnet_drivers::mem::{LinkConfig, MemLink};
use cnet_stack::Instant;
use cnet_tests::{stack, IP_A, IP_B, MAC_A, MAC_B};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts (in a const-initialised
// thread local, which itself never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn steady_state_udp_echo_allocates_nothing() {
    let (pa, pb) = MemLink::pair(LinkConfig::new(1, MAC_A, MAC_B)).unwrap();
    let mut a = Host::new(stack(MAC_A, IP_A, 1, 1024), pa);
    let mut b = Host::new(stack(MAC_B, IP_B, 2, 1024), pb);
    let server = b.stack.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    let client = a.stack.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let dst = std::net::SocketAddrV4::new(IP_B, 7);
    let mut now = Instant::ZERO;
    let mut echoed = 0u64;
    let round = |now: Instant, a: &mut Host<_>, b: &mut Host<_>| -> u64 {
        for _ in 0..32 {
            let f = a.stack.udp_alloc().expect("pool has frames");
            a.stack
                .pool_mut()
                .push_back(&f, 64)
                .expect("room")
                .fill(0x5a);
            a.stack.udp_send(client, f, dst, now).expect("send");
        }
        let mut got = 0;
        for _ in 0..4 {
            a.poll(now).unwrap();
            b.poll(now).unwrap();
            while let Some(d) = b.stack.udp_recv(server) {
                b.stack.udp_send(server, d.frame, d.src, now).expect("echo");
            }
            b.flush(now).unwrap();
            a.poll(now).unwrap();
            while let Some(d) = a.stack.udp_recv(client) {
                a.stack.pool_mut().free(d.frame);
                got += 1;
            }
        }
        got
    };
    for _ in 0..50 {
        now = now + cnet_stack::Duration::from_micros(100);
        echoed += round(now, &mut a, &mut b);
    }
    assert_eq!(echoed, 50 * 32, "warm-up echoes all came back");
    let before = allocs();
    for _ in 0..313 {
        now = now + cnet_stack::Duration::from_micros(100);
        echoed += round(now, &mut a, &mut b);
    }
    let during = allocs() - before;
    assert_eq!(echoed, 363 * 32);
    assert_eq!(during, 0, "{during} heap allocations during 10 016 echoes");
}
