//! The `reg` command line: one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod serve;
mod version;

/// reg: a register registry — named, self-expiring JSON values with long polls, change
/// requests and streaming watch.
#[derive(Debug, Parser)]
#[command(name = "reg", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST API (in memory, no configuration needed).
    Serve(serve::ServeArgs),
    /// Benchmark a reg server (capacity planning): fleet, read, write, fanout, commands,
    /// ceiling.
    Bench(bench::BenchArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Version => version::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reg: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
