//! In-memory bulk TCP throughput, cnet against smoltcp 0.14 on the same link design (issue #6,
//! benchmark 1). See `cnet_benches::tcp_mem` for the workload.
//!
//! ```text
//! tcp_bulk [--bytes 268435456] [--warmup 16777216] [--buf 4194304] [--step-us 10] [--runs 3]
//!          [--only cnet,cnet-ts,smoltcp,cnet-zc,smoltcp-zc] [--quick]
//! ```
//!
//! Runs alternate between variants (cnet, cnet-ts, smoltcp, cnet-zc, smoltcp-zc, cnet, ...), each
//! on a fresh pair (`-zc`: both stacks' zero-copy receive calls, see `cnet_benches::tcp_mem`):
//! connect, `--warmup` bytes untimed, then `--bytes` timed. Output, one record per line:
//!
//! ```text
//! run variant=cnet run=1 bytes=.. secs=.. gbps=.. cpu_secs=.. cpu_gbps=.. steps=.. acks_per_gib=..
//! result variant=cnet runs=3 median_gbps=.. median_cpu_gbps=..
//! ratio cnet_over_smoltcp=.. cnet_ts_over_smoltcp=.. cnet_zc_over_smoltcp_zc=.. goal=3 goal_met=yes|no
//! ratio_cpu cnet_over_smoltcp=.. (the same, by the thread's CPU time)
//! ```
//!
//! `acks_per_gib`: the receiver's pure ACKs. `cpu_*`: by the benchmark thread's CPU time
//! (`cnet_benches::cpu`), which leaves out the time other jobs held the core; on a shared machine
//! it is the steadier figure, and `ratio_cpu` the one to quote.
//!
//! `gbps` is goodput on one core: client stack, server stack, both applications and the link all
//! run on the calling thread.

use anyhow::{Context as _, Result};
use cnet_benches::tcp_mem::{Bulk, BulkConfig, BULK_VARIANTS};

/// Command line (`tcp_bulk --help`).
#[derive(clap::Parser)]
#[command(
    name = "tcp_bulk",
    about = "In-memory bulk TCP, cnet against smoltcp on the same link"
)]
struct Args {
    /// Bytes timed per run.
    #[arg(long, default_value_t = 256 << 20, value_parser = cnet_benches::cli::count::<u64>)]
    bytes: u64,
    /// Bytes sent untimed first, on the same connection.
    #[arg(long, default_value_t = 16 << 20, value_parser = cnet_benches::cli::count::<u64>)]
    warmup: u64,
    /// Send and receive buffer of every socket, bytes (64 KiB..=64 MiB).
    #[arg(long, default_value_t = 4 << 20, value_parser = cnet_benches::cli::count::<u32>)]
    buf: u32,
    /// Virtual time per loop step, microseconds.
    #[arg(long, default_value_t = 10, value_parser = cnet_benches::cli::count::<u64>)]
    step_us: u64,
    /// Runs per variant (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = cnet_benches::cli::count::<usize>)]
    runs: usize,
    /// Variants, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = BULK_VARIANTS.map(String::from),
          value_parser = clap::builder::PossibleValuesParser::new(BULK_VARIANTS))]
    only: Vec<String>,
    /// A short run: 16 MiB after 1 MiB, one run (overrides --bytes, --warmup, --runs).
    #[arg(long)]
    quick: bool,
}

/// Longest a variant's run may take before the benchmark gives up (it never hangs).
const RUN_LIMIT_SECS: f64 = 120.0;

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let mut cfg = BulkConfig {
        bytes: args.bytes,
        warmup: args.warmup,
        buf: args.buf,
        step_us: args.step_us,
        ..BulkConfig::default()
    };
    let (mut runs, only) = (args.runs, args.only);
    if args.quick {
        cfg.bytes = 16 << 20;
        cfg.warmup = 1 << 20;
        runs = 1;
    }
    anyhow::ensure!(
        cfg.bytes > 0 && runs > 0,
        "--bytes and --runs must be positive"
    );
    anyhow::ensure!(
        cfg.buf >= 64 * 1024 && cfg.buf <= 64 << 20,
        "--buf in 64 KiB..=64 MiB"
    );
    anyhow::ensure!(cfg.step_us > 0, "--step-us at least 1");
    println!(
        "# tcp_bulk bytes={} warmup={} buf={} step_us={} runs={} mss=1460 link=copy build={}",
        cfg.bytes,
        cfg.warmup,
        cfg.buf,
        cfg.step_us,
        runs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    // Per variant: Gbit/s by wall clock, and by the thread's CPU time (`cnet_benches::cpu`).
    let mut results: Vec<(String, Vec<f64>, Vec<f64>)> =
        only.iter().map(|v| (v.clone(), vec![], vec![])).collect();
    for run in 1..=runs {
        for (v, gbps, cpu_gbps) in results.iter_mut() {
            let t = std::time::Instant::now();
            let mut b = Bulk::new(v, &cfg)?;
            let r = b.run(&cfg).with_context(|| format!("{v} run {run}"))?;
            println!(
                "run variant={v} run={run} bytes={} secs={:.4} gbps={:.3} cpu_secs={:.4} cpu_gbps={:.3} steps={} acks_per_gib={:.0} info={}",
                r.bytes,
                r.secs,
                r.gbps(),
                r.cpu_secs,
                r.cpu_gbps(),
                r.steps,
                r.acks_per_gib(),
                match &b {
                    Bulk::Cnet(c) => c.info().replace(' ', ","),
                    Bulk::Smoltcp(_) => "-".into(),
                }
            );
            gbps.push(r.gbps());
            cpu_gbps.push(r.cpu_gbps());
            anyhow::ensure!(
                t.elapsed().as_secs_f64() < RUN_LIMIT_SECS,
                "{v}: run took over {RUN_LIMIT_SECS} s"
            );
        }
    }
    let mut med = Vec::new();
    for (v, g, c) in &results {
        let (m, mc) = (median(g.clone()), median(c.clone()));
        println!(
            "result variant={v} runs={} median_gbps={m:.3} median_cpu_gbps={mc:.3}",
            g.len()
        );
        med.push((v.as_str(), m, mc));
    }
    for (label, cpu) in [("ratio", false), ("ratio_cpu", true)] {
        let get = |n: &str| {
            med.iter()
                .find(|(v, _, _)| *v == n)
                .map(|&(_, w, c)| if cpu { c } else { w })
        };
        let ratio = |a: &str, b: &str| match (get(a), get(b)) {
            (Some(a), Some(b)) => a / b,
            _ => f64::NAN,
        };
        let c = ratio("cnet", "smoltcp");
        let t = ratio("cnet-ts", "smoltcp");
        let z = ratio("cnet-zc", "smoltcp-zc");
        if c.is_finite() || t.is_finite() || z.is_finite() {
            // The goal (issue #17) is met when either API pairing reaches it.
            let best = [c, z]
                .into_iter()
                .filter(|r| r.is_finite())
                .fold(0.0, f64::max);
            println!(
                "{label} cnet_over_smoltcp={c:.2} cnet_ts_over_smoltcp={t:.2} cnet_zc_over_smoltcp_zc={z:.2} goal=3 goal_met={}",
                if best >= 3.0 { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
