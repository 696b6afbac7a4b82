//! Many established TCP connections between two cnet stacks in memory (issue #6, benchmarks 4
//! and 5). See `cnet_benches::tcp_scale` for the set-up.
//!
//! ```text
//! tcp_conns [--conns 10,100000] [--echoes 200000] [--warmup 20000] [--payload 64] [--window 8]
//!           [--mem-conns 10000] [--skip-mem] [--quick]
//! tcp_conns --only-echo --conns N --echoes K      (one measurement; what benches/callgrind_tcp.sh runs)
//! ```
//!
//! 1. Per echoed packet: for each N in `--conns`, establish N idle connections, open the echo
//!    connection, `--warmup` echoes, then `--echoes` timed echoes inside [`measured_echoes`] (the
//!    function callgrind's `--toggle-collect` counts). Wall-clock ns per echo here; instructions
//!    with `benches/callgrind_tcp.sh`.
//! 2. Memory: a counting global allocator. After a first batch of connections (which sizes the
//!    link's wire buffers, the accept queues and other per-burst scratch), live heap bytes are
//!    recorded, `--mem-conns` more idle connections are established, and the growth of live heap
//!    is divided by the connections added *on both stacks* (each connection exists once in the
//!    client and once in the server). Frame pools are allocated when the stacks are built, so
//!    frames are excluded; the benchmark's own handle vectors are reserved up front.
//!
//! Output, one record per line: `echo conns=N ... ns_per_echo=..`, `echo_ratio ...`,
//! `mem conns=N ... bytes_per_conn=.. goal=1024 goal_met=yes|no`.

use anyhow::Result;
use cnet_benches::tcp_scale::{Scale, ScaleConfig, CONNECT_BATCH};
use cnet_stack::Stack;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting live bytes and allocations.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Most connections accepted on the command line (two listeners' worth of ports is 129,024).
const MAX_CONNS: usize = 500_000;

/// Command line (`tcp_conns --help`).
#[derive(Debug, clap::Parser)]
#[command(
    name = "tcp_conns",
    about = "Per-packet cost and memory with many TCP connections"
)]
struct Options {
    /// Idle connection counts to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100_000],
          value_parser = cnet_benches::cli::count::<usize>)]
    conns: Vec<usize>,
    /// Echoes timed per count.
    #[arg(long, default_value_t = 200_000, value_parser = cnet_benches::cli::count::<u64>)]
    echoes: u64,
    /// Echoes untimed first.
    #[arg(long, default_value_t = 20_000, value_parser = cnet_benches::cli::count::<u64>)]
    warmup: u64,
    /// Echo payload bytes.
    #[arg(long, default_value_t = 64, value_parser = cnet_benches::cli::count::<usize>)]
    payload: usize,
    /// Echoes in flight.
    #[arg(long, default_value_t = 8, value_parser = cnet_benches::cli::count::<usize>)]
    window: usize,
    /// Connections for the memory measurement.
    #[arg(long, default_value_t = 10_000, value_parser = cnet_benches::cli::count::<usize>)]
    mem_conns: usize,
    /// Skip the memory measurement.
    #[arg(long)]
    skip_mem: bool,
    /// Only the echo at the first count (for callgrind); implies --skip-mem.
    #[arg(long)]
    only_echo: bool,
    /// A short run: 10 and 10 000 connections, 20 000 echoes (overrides those flags).
    #[arg(long)]
    quick: bool,
    /// Run the memory measurement (not --skip-mem nor --only-echo).
    #[arg(skip)]
    mem: bool,
}

fn parse() -> Result<Options> {
    let mut o = <Options as clap::Parser>::parse();
    if o.quick {
        o.conns = vec![10, 10_000];
        o.echoes = 20_000;
        o.warmup = 2_000;
        o.mem_conns = 2_000;
    }
    o.mem = !o.skip_mem && !o.only_echo;
    anyhow::ensure!(
        o.conns.iter().all(|&n| n <= MAX_CONNS) && o.mem_conns <= MAX_CONNS,
        "at most {MAX_CONNS} connections"
    );
    Ok(o)
}

/// The echoes callgrind counts (`--toggle-collect='*measured_echoes*'`).
#[inline(never)]
fn measured_echoes(s: &mut Scale, n: u64) -> Result<u64> {
    s.echo(n)
}

/// Establishes `conns` idle connections and the echo connection, warms up, times `echoes`.
fn echo_run(o: &Options, conns: usize) -> Result<f64> {
    let cfg = ScaleConfig {
        conns,
        payload: o.payload,
        window: o.window,
        ..ScaleConfig::default()
    };
    let t = std::time::Instant::now();
    let mut s = Scale::new(&cfg)?;
    s.establish(conns)?;
    let establish = t.elapsed().as_secs_f64();
    s.open_echo(o.warmup)?;
    let t = std::time::Instant::now();
    let steps = measured_echoes(&mut s, o.echoes)?;
    let secs = t.elapsed().as_secs_f64();
    let ns = if o.echoes > 0 {
        secs * 1e9 / o.echoes as f64
    } else {
        0.0
    };
    let (cc, sc) = s.connections();
    println!(
        "echo conns={conns} client_table={cc} server_table={sc} payload={} window={} echoes={} \
         steps={steps} secs={secs:.4} ns_per_echo={ns:.1} establish_secs={establish:.2} \
         conns_per_sec_established={:.0}",
        o.payload,
        o.window,
        o.echoes,
        conns as f64 / establish.max(1e-9)
    );
    Ok(ns)
}

/// Heap growth per idle established connection.
fn mem_run(o: &Options) -> Result<f64> {
    let warm = 2 * CONNECT_BATCH;
    let n = o.mem_conns;
    let cfg = ScaleConfig {
        conns: warm + n,
        ..ScaleConfig::default()
    };
    let mut s = Scale::new(&cfg)?;
    s.establish(warm)?;
    let live0 = LIVE.load(Ordering::Relaxed);
    let allocs0 = ALLOCS.load(Ordering::Relaxed);
    s.establish(n)?;
    let grown = LIVE.load(Ordering::Relaxed) - live0;
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
    let (cc, sc) = s.connections();
    anyhow::ensure!(cc == warm + n && sc == warm + n, "tables {cc}/{sc}");
    let per = grown as f64 / (2 * n) as f64;
    println!(
        "mem conns={n} both_stacks_heap_growth={grown} allocations={allocs} \
         bytes_per_conn={per:.0} conn_struct_and_boxes={} goal=1024 goal_met={}",
        Stack::tcp_conn_size(),
        if per <= 1024.0 { "yes" } else { "no" }
    );
    Ok(per)
}

fn main() -> Result<()> {
    let o = parse()?;
    if !o.only_echo {
        println!(
            "# tcp_conns conns={:?} echoes={} warmup={} payload={} window={} mem_conns={} build={}",
            o.conns,
            o.echoes,
            o.warmup,
            o.payload,
            o.window,
            o.mem_conns,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
    let mut ns = Vec::new();
    for &n in &o.conns {
        ns.push((n, echo_run(&o, n)?));
    }
    if !o.only_echo && ns.len() >= 2 {
        let (n0, a) = ns[0];
        let (n1, b) = ns[ns.len() - 1];
        println!(
            "echo_ratio conns_low={n0} conns_high={n1} ns_ratio={:.2} (wall clock; instructions: \
             benches/callgrind_tcp.sh)",
            b / a
        );
    }
    if o.mem {
        mem_run(&o)?;
    }
    Ok(())
}
