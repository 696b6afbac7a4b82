//! `cnet`: the cnet service binary.
//!
//! Subcommands:
//! - `demo --mem`: two cnet stacks over the impaired in-memory link (no privileges needed).

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cnet", version, about = "userspace IPv4/UDP stack over AF_XDP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the stack at work.
    Demo {
        /// Run over the in-memory link between two cnet stacks.
        #[arg(long)]
        mem: bool,
        /// Seed of the simulated link and the stacks.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { mem: _, seed } => cnet_apps::mem_demo::run(&mut std::io::stdout().lock(), seed),
    }
}
