//! UDP echo benchmark: cnet against smoltcp 0.14, same workload, same run, one core.
//!
//! ```text
//! udp_echo [--payload 64,1024] [--window 32] [--count 1000000] [--warmup 20000] [--runs 5]
//!          [--step-us 10] [--only cnet|cnet-copy|smoltcp] [--sockets 0] [--idle-first] [--quick]
//! ```
//!
//! `--sockets N` (scaling variant): each side also has N idle UDP sockets bound on ports
//! 20000.. (cnet: `udp_bind`; smoltcp: N more sockets in its `SocketSet`, after the echo socket,
//! or ahead of it with `--idle-first`). The echo traffic is the same; what changes is what each
//! stack's demultiplexing and transmit scheduling cost with N sockets present.
//!
//! Variants (see the crate docs): `cnet` over `MemLink`, `cnet-copy` over the same plain copying
//! link as `smoltcp`. For each payload size, runs alternate between the variants (cnet,
//! cnet-copy, smoltcp, cnet, ...) so that a noisy neighbour hurts all alike; each run builds a
//! fresh pair, warms it up (ARP, buffers, caches) with `--warmup` echoes, then times `--count`
//! echoes. Output, one record per line:
//!
//! ```text
//! run stack=cnet payload=64 run=1 echoed=1000000 steps=31250 secs=0.2500 pps=4000000 cpu_secs=.. cpu_pps=..
//! result stack=cnet payload=64 window=32 count=1000000 runs=5 median_pps=... min_pps=... max_pps=... median_cpu_pps=...
//! ratio payload=64 cnet_pps=... cnet_copy_pps=... smoltcp_pps=... ratio=... ratio_same_link=...
//! ratio_cpu payload=64 ratio=... ratio_same_link=...
//! ```
//!
//! `cpu_*`: per CPU second of the benchmark's thread (`cnet_benches::cpu`), which leaves out the
//! time other jobs held the core; on a shared machine `ratio_cpu` is the steadier figure.
//!
//! `pps` counts echoed packets per second: one request and its reply, each through both stacks.
//! `--only S --runs 1 --count N` runs one stack, for `valgrind --tool=callgrind` (see
//! `benches/callgrind.sh`: instructions per packet = (Ir at N - Ir at 0) / N).

use anyhow::Context as _;
use cnet_benches::{build, Workload, VARIANTS};
use std::time::Instant;

/// Command line (`udp_echo --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "udp_echo",
    about = "UDP echo in memory, cnet against smoltcp, same run"
)]
struct Options {
    /// Payload sizes, comma-separated.
    #[arg(long = "payload", value_delimiter = ',', default_values_t = [64, 1024],
          value_parser = cnet_benches::cli::count::<usize>)]
    payloads: Vec<usize>,
    /// Datagrams in flight.
    #[arg(long, default_value_t = 32, value_parser = cnet_benches::cli::count::<usize>)]
    window: usize,
    /// Echoes timed per run.
    #[arg(long, default_value_t = 1_000_000, value_parser = cnet_benches::cli::count::<u64>)]
    count: u64,
    /// Echoes untimed first (ARP, buffers, caches).
    #[arg(long, default_value_t = 20_000, value_parser = cnet_benches::cli::count::<u64>)]
    warmup: u64,
    /// Runs per variant (at least 1; the median is reported).
    #[arg(long, default_value_t = 5, value_parser = cnet_benches::cli::count::<usize>)]
    runs: usize,
    /// Virtual time per loop step, microseconds.
    #[arg(long, default_value_t = 10, value_parser = cnet_benches::cli::count::<u64>)]
    step_us: u64,
    /// One variant only (for callgrind).
    #[arg(long = "only", value_parser = clap::builder::PossibleValuesParser::new(VARIANTS))]
    only: Option<String>,
    /// Idle UDP sockets on each side (ports 20000..).
    #[arg(long, default_value_t = 0, value_parser = cnet_benches::cli::count::<usize>)]
    sockets: usize,
    /// smoltcp: the idle sockets ahead of the echo socket in its set.
    #[arg(long)]
    idle_first: bool,
    /// A short run: 20 000 echoes after 2 000, one run (overrides those flags).
    #[arg(long)]
    quick: bool,
    /// The variants to run (`--only`, else all).
    #[arg(skip)]
    stacks: Vec<&'static str>,
}

fn parse_args() -> Options {
    let mut o = <Options as clap::Parser>::parse();
    if o.quick {
        o.count = 20_000;
        o.warmup = 2_000;
        o.runs = 1;
    }
    o.runs = o.runs.max(1);
    o.stacks = match &o.only {
        Some(v) => VARIANTS.iter().copied().filter(|x| x == v).collect(),
        None => VARIANTS.to_vec(),
    };
    o
}

/// One timed run on a fresh pair; returns echoed packets per second, by wall clock and per CPU
/// second of this thread (`cnet_benches::cpu`).
fn run_once(stack: &str, w: Workload, o: &Options, run: usize) -> anyhow::Result<(f64, f64)> {
    let mut pair = build(stack, w)?;
    pair.add_idle_sockets(o.sockets, o.idle_first)
        .with_context(|| format!("{stack}: {} idle sockets", o.sockets))?;
    pair.run(o.warmup)
        .with_context(|| format!("{stack} warm-up"))?;
    let t0 = Instant::now();
    let c0 = cnet_benches::cpu::thread_cpu_secs();
    let steps = pair
        .run(o.count)
        .with_context(|| format!("{stack} measured run"))?;
    let cpu_secs = cnet_benches::cpu::thread_cpu_secs() - c0;
    let secs = t0.elapsed().as_secs_f64();
    let rate = |s: f64| if s > 0.0 { o.count as f64 / s } else { 0.0 };
    let (pps, cpu_pps) = (rate(secs), rate(cpu_secs));
    println!(
        "run stack={} payload={} sockets={} run={} echoed={} steps={} secs={:.4} pps={:.0} \
         cpu_secs={:.4} cpu_pps={:.0}",
        pair.name(),
        w.payload,
        o.sockets,
        run,
        o.count,
        steps,
        secs,
        pps,
        cpu_secs,
        cpu_pps
    );
    Ok((pps, cpu_pps))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args();
    println!(
        "# udp_echo window={} count={} warmup={} runs={} step_us={} sockets={} idle_first={} build={}",
        o.window,
        o.count,
        o.warmup,
        o.runs,
        o.step_us,
        o.sockets,
        o.idle_first,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for &payload in &o.payloads {
        let w = Workload {
            payload,
            window: o.window,
            step_us: o.step_us,
        };
        w.validate()?;
        let mut pps: Vec<Vec<f64>> = vec![Vec::with_capacity(o.runs); o.stacks.len()];
        let mut cpu_pps = pps.clone();
        for run in 1..=o.runs {
            for (i, stack) in o.stacks.iter().enumerate() {
                let (p, c) = run_once(stack, w, &o, run)?;
                pps[i].push(p);
                cpu_pps[i].push(c);
            }
        }
        let mut medians = Vec::with_capacity(o.stacks.len());
        let mut cpu_medians = Vec::with_capacity(o.stacks.len());
        for ((stack, v), c) in o.stacks.iter().zip(pps.iter_mut()).zip(cpu_pps.iter_mut()) {
            let m = median(v);
            let mc = median(c);
            println!(
                "result stack={} payload={} sockets={} window={} count={} runs={} median_pps={:.0} \
                 min_pps={:.0} max_pps={:.0} median_cpu_pps={:.0}",
                stack,
                payload,
                o.sockets,
                o.window,
                o.count,
                o.runs,
                m,
                v.first().copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0),
                mc
            );
            medians.push(m);
            cpu_medians.push(mc);
        }
        if let [cnet, copy, smol] = medians[..] {
            let ratio = |x: f64| if smol > 0.0 { x / smol } else { 0.0 };
            println!(
                "ratio payload={payload} sockets={} cnet_pps={cnet:.0} cnet_copy_pps={copy:.0} \
                 smoltcp_pps={smol:.0} ratio={:.2} ratio_same_link={:.2}",
                o.sockets,
                ratio(cnet),
                ratio(copy)
            );
        }
        if let [cnet, copy, smol] = cpu_medians[..] {
            let ratio = |x: f64| if smol > 0.0 { x / smol } else { 0.0 };
            println!(
                "ratio_cpu payload={payload} sockets={} ratio={:.2} ratio_same_link={:.2}",
                o.sockets,
                ratio(cnet),
                ratio(copy)
            );
        }
    }
    Ok(())
}
