//! The `reg` command line: one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc (with its background purge threads) rather than glibc's malloc: after a million
/// registers with a 1 s TTL came and expired, glibc kept 185 MiB resident for good and mimalloc
/// 135 MiB (registers freed by the expiry thread, allocated by idle workers); jemalloc was back
/// at 30-35 MiB within 10-15 s, from 12-14 MiB idle. `cargo run --release --example churn`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bench;
mod browse;
mod common;
mod get;
mod list;
mod mcp;
mod provide;
mod serve;
mod service;
mod set;
mod token;
mod version;
mod watch;

/// reg: a register registry — named, self-expiring JSON values with long polls, change
/// requests and streaming watch.
#[derive(Debug, Parser)]
#[command(
    name = "reg",
    version,
    about,
    propagate_version = true,
    after_help = common::EXIT_STATUS_HELP
)]
struct Cli {
    /// Also accepted before the subcommand (`reg --registry URL get x`), as it was before it
    /// moved onto the subcommands that talk to a registry; hidden from the help.
    #[arg(long, hide = true, value_name = "URL")]
    registry: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provide a register: publish it, keep it alive, take change requests.
    ///
    /// The register is refreshed at half its TTL. Each line on stdin (one JSON value per line)
    /// becomes its new value; a line that is not JSON is reported on stderr and skipped. Change
    /// requests are printed to stdout as JSON lines {"name":…,"value":…} and applied unless
    /// --read-only. Ctrl-C (SIGINT) or SIGTERM removes the register and exits with status 0. At
    /// the end of stdin the register is kept alive until a signal comes.
    Provide(provide::ProvideArgs),
    /// Print registers' current values as JSON.
    ///
    /// One name: its value. Several: an object name → value. With --metadata, each value is
    /// {"value":…,"metadata":…}. A register that does not exist is waited for up to --timeout,
    /// then it is an error (exit status 3).
    Get(get::GetArgs),
    /// Ask a register's provider for a new value and wait until it confirms.
    ///
    /// Sends a change request, then waits until the register holds the requested value (exit
    /// status 0) or --timeout runs out (exit status 4). Nothing is printed on success unless
    /// --stay is given.
    Set(set::SetArgs),
    /// List every register, sorted by name: one `name=<json>` line each.
    ///
    /// With --metadata each line is {"name":…,"value":…,"metadata":…}; --json prints one object
    /// of them all instead. With --stay, print one JSON line per register and then one per
    /// change instead: {"event":"set","name":…,"value":…,
    /// "revision":…} or {"event":"removed","name":…,"revision":…}, until interrupted.
    List(list::ListArgs),
    /// Stream changes as JSON lines.
    ///
    /// One line per event: {"event":"set","name":…,"value":…,"metadata":…,"revision":…}, or
    /// {"event":"delete"|"expire","name":…,"revision":…}. No names: every register. After a lost
    /// connection the stream resumes from the last revision seen, so no change is missed.
    Watch(watch::WatchArgs),
    /// Browse the registry live in the terminal (flat, tree or services view, filter, edit).
    ///
    /// Flat or tree view (names split on `.`, key t), or the services view (key s, or
    /// --services: each service with its instances, the registers svc/<service>/<id>, and their
    /// status in colour), a filter, a details panel (value, metadata, revision, time to
    /// expiry), and editing a value (sends a change request). Registers that are deleted or
    /// expire stay red for a few seconds, marked `deleted` or `expired`. A status line shows the
    /// connection (live, reconnecting, unreachable with the whole error). Keys are shown at the
    /// bottom; q, Esc or Ctrl-C quits.
    Browse(browse::BrowseArgs),
    /// Serve MCP on stdio for LLM agents: get_register, list_registers, request_change,
    /// set_register.
    ///
    /// For an MCP client's configuration: command `reg`, arguments `["mcp"]`, and the registry
    /// URL in the REGISTRY environment variable (or `--registry`). Ends at the end of stdin.
    Mcp(mcp::McpArgs),
    /// Service discovery: register an instance (kept alive until Ctrl-C), deregister, list
    /// services, show a service's instances, watch a service.
    ///
    /// An instance is the register svc/<service>/<id>; see docs/discovery.md.
    Service(service::ServiceArgs),
    /// Serve the REST API (in memory, no configuration needed).
    Serve(serve::ServeArgs),
    /// Benchmark a reg server (capacity planning): fleet, read, write, fanout, commands,
    /// ceiling.
    Bench(bench::BenchArgs),
    /// Make bearer tokens and the hashes a server's --auth file holds.
    ///
    /// `reg token new` prints a new random token and its hash; `reg token hash` prints the
    /// hash (sha256:<hex>) of a token given as an argument or on stdin.
    Token(token::TokenArgs),
    /// Print the version.
    Version,
}

impl Command {
    /// The registry URL of a subcommand that talks to a registry.
    fn registry(&mut self) -> Option<&mut common::RegistryArg> {
        match self {
            Command::Provide(args) => Some(&mut args.registry),
            Command::Get(args) => Some(&mut args.registry),
            Command::Set(args) => Some(&mut args.registry),
            Command::List(args) => Some(&mut args.registry),
            Command::Watch(args) => Some(&mut args.registry),
            Command::Browse(args) => Some(&mut args.registry),
            Command::Mcp(args) => Some(&mut args.registry),
            Command::Service(args) => Some(&mut args.registry),
            Command::Serve(_) | Command::Bench(_) | Command::Token(_) | Command::Version => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Command::Provide(_) => "provide",
            Command::Get(_) => "get",
            Command::Set(_) => "set",
            Command::List(_) => "list",
            Command::Watch(_) => "watch",
            Command::Browse(_) => "browse",
            Command::Mcp(_) => "mcp",
            Command::Service(_) => "service",
            Command::Serve(_) => "serve",
            Command::Bench(_) => "bench",
            Command::Token(_) => "token",
            Command::Version => "version",
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(url) = cli.registry.take() {
        match cli.command.registry() {
            Some(registry) => registry.registry = url,
            None => {
                use clap::CommandFactory;
                let name = cli.command.name();
                let hint = if name == "bench" {
                    "; bench takes --url for a remote server"
                } else {
                    ""
                };
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--registry does not apply to `reg {name}`{hint}"),
                    )
                    .exit();
            }
        }
    }
    let result = match cli.command {
        Command::Provide(args) => provide::run(args),
        Command::Get(args) => get::run(args),
        Command::Set(args) => set::run(args),
        Command::List(args) => list::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Browse(args) => browse::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Service(args) => service::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
        Command::Version => version::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output went away (`reg watch | head -1`): nothing to report.
        Err(error) if common::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reg: error: {}", common::error_chain(&error));
            let code = error
                .downcast_ref::<common::Failure>()
                .map_or(common::exit::ERROR, |failure| failure.code);
            ExitCode::from(code)
        }
    }
}
