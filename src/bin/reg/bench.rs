//! `reg bench`: the capacity-planning benchmark suite (see `reg::bench`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use reg::bench::{
    self, CommandsOptions, Common, DiscoveryOptions, FanoutOptions, FleetOptions, Scenario, Target,
    ThroughputOptions,
};

use crate::common::AccessArgs;
use crate::serve::parse_duration;

/// Measure a reg server: throughput and latency beside this machine's ceiling.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: ScenarioCommand,
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// D devices each providing R registers with TTL T (refresh at T/2), C consumers
    /// long-polling subsets: sustained refreshes/s, update→consumer latency, server memory.
    Fleet {
        #[command(flatten)]
        common: CommonArgs,
        /// Devices.
        #[arg(long, default_value_t = FleetOptions::default().devices)]
        devices: usize,
        /// Registers each device provides.
        #[arg(long, default_value_t = FleetOptions::default().registers_per_device)]
        registers: usize,
        /// Register TTL; devices refresh at TTL/2 (Go duration).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        ttl: Duration,
        /// Consumers long-polling device readings.
        #[arg(long, default_value_t = FleetOptions::default().consumers)]
        consumers: usize,
        /// Connections the devices share.
        #[arg(long, default_value_t = FleetOptions::default().device_connections)]
        device_connections: usize,
        /// Fraction of refreshes that change a device's reading.
        #[arg(long, default_value_t = FleetOptions::default().change_ratio)]
        change_ratio: f64,
    },
    /// GET /consumer throughput and latency, beside the ceiling.
    Read {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// PUT /provider throughput and latency (changes and refreshes), beside the ceiling.
    Write {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// N parked long polls on one register (PUT → answers), and PUT cost with N polls
    /// parked on N other registers.
    Fanout {
        #[command(flatten)]
        common: CommonArgs,
        /// Parked long polls. In-process, client and server sockets share this process's
        /// open-file limit: above ~7,000 run `reg serve` separately and pass --url.
        #[arg(long, default_value_t = FanoutOptions::default().polls)]
        polls: usize,
        /// Connections of the steady PUT load.
        #[arg(long, default_value_t = FanoutOptions::default().connections)]
        connections: usize,
    },
    /// Change-request round trip: consumer PUT → provider poll answered → provider's new
    /// value seen by the consumer.
    Commands {
        #[command(flatten)]
        common: CommonArgs,
        /// Providers.
        #[arg(long, default_value_t = CommandsOptions::default().providers)]
        providers: usize,
        /// Concurrent consumers sending requests.
        #[arg(long, default_value_t = CommandsOptions::default().drivers)]
        drivers: usize,
    },
    /// Service discovery: I instances over S services with W watching clients. A change to
    /// an instance → every watcher of its service (beside the same watchers as plain
    /// register polls), pick() cost from a cached service, server memory per instance.
    Discovery {
        #[command(flatten)]
        common: CommonArgs,
        /// Instances, spread over the services.
        #[arg(long, default_value_t = DiscoveryOptions::default().instances)]
        instances: usize,
        /// Services.
        #[arg(long, default_value_t = DiscoveryOptions::default().services)]
        services: usize,
        /// Watching clients (one connection each), spread over the services.
        #[arg(long, default_value_t = DiscoveryOptions::default().watchers)]
        watchers: usize,
        /// Changes measured.
        #[arg(long, default_value_t = DiscoveryOptions::default().changes)]
        changes: usize,
    },
    /// Run the ceiling server alone until stdin closes (used by `fanout`).
    #[command(hide = true)]
    CeilingServer {
        /// Park every GET until the next PUT.
        #[arg(long)]
        park: bool,
        /// The body to answer with.
        #[arg(long, default_value = "{}")]
        body: String,
    },
    /// The bare hyper server alone: this machine's HTTP limit.
    Ceiling {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Measure the running reg-compatible server at this URL (`http[s]://host:port`): the
    /// run writes registers named `bench.*` there and deletes them when done. A cluster's
    /// nodes, comma-separated: writes go to the first, long polls park on the others (a write
    /// wakes polls on other nodes) and loads spread over all. Default: start reg in-process.
    /// Never read from $REGISTRY, so a bench run cannot load a server by accident.
    #[arg(long, value_name = "URL[,URL…]")]
    url: Option<String>,
    // TLS files and token for the server at --url (unused in-process).
    #[command(flatten)]
    access: AccessArgs,
    /// Run the scenario this many times (reg and the ceiling alternating which goes first) and
    /// report the median run, the spread, and warnings when the machine was too noisy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// How long to measure (Go duration); default 45s for fleet, 10s otherwise.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long to run before measuring (Go duration).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML report with latency plots to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Client connections.
    #[arg(long, default_value_t = ThroughputOptions::default().connections)]
    connections: usize,
    /// Target requests/s (open loop, latency corrected for coordinated omission); default:
    /// as fast as answered (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct registers the requests cycle over.
    #[arg(long, default_value_t = ThroughputOptions::default().registers)]
    registers: usize,
    /// Bytes of each register's value.
    #[arg(long, default_value_t = ThroughputOptions::default().value_bytes)]
    value_bytes: usize,
}

impl LoadArgs {
    fn options(&self) -> ThroughputOptions {
        ThroughputOptions {
            connections: self.connections,
            rate: self.rate,
            registers: self.registers,
            value_bytes: self.value_bytes,
        }
    }
}

/// Says on stderr, before anything runs, which server the run loads and what it leaves there.
fn announce(scenario: &Scenario, common: &Common) {
    let name = scenario.name();
    match &common.target {
        Target::Url(url) => eprintln!(
            "reg bench {name}: loading the server at {url}. It writes registers named bench.* \
             there (TTL {}) and deletes them when done.",
            reg::format_go_duration(common.ttl())
        ),
        Target::InProcess if matches!(scenario, Scenario::Ceiling(_)) => {
            eprintln!("reg bench {name}: measuring a bare hyper server in this process.");
        }
        Target::InProcess => {
            let also = if std::env::var_os("REGISTRY").is_some() {
                " ($REGISTRY is set, but reg bench never reads it.)"
            } else {
                ""
            };
            eprintln!(
                "reg bench {name}: measuring a reg server started in this process; pass \
                 --url http://host:port to load a running one.{also}"
            );
        }
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (common_args, scenario) = match args.scenario {
        ScenarioCommand::Fleet {
            common,
            devices,
            registers,
            ttl,
            consumers,
            device_connections,
            change_ratio,
        } => {
            if !(0.0..=1.0).contains(&change_ratio) {
                anyhow::bail!("--change-ratio must be between 0 and 1, not {change_ratio}");
            }
            let options = FleetOptions {
                devices,
                registers_per_device: registers,
                ttl,
                consumers,
                device_connections,
                change_ratio,
            };
            (common, Scenario::Fleet(options))
        }
        ScenarioCommand::Read { common, load } => (common, Scenario::Read(load.options())),
        ScenarioCommand::Write { common, load } => (common, Scenario::Write(load.options())),
        ScenarioCommand::Fanout {
            common,
            polls,
            connections,
        } => {
            // Beside the polls' own sockets, an in-process parking ceiling needs one more
            // socket per poll: past ~7,000 polls run it in a child process.
            let ceiling_command = (polls > 7_000)
                .then(std::env::current_exe)
                .transpose()
                .context("cannot find the reg binary to run the ceiling server")?;
            let options = FanoutOptions {
                polls,
                connections,
                ceiling_command,
            };
            (common, Scenario::Fanout(options))
        }
        ScenarioCommand::CeilingServer { park, body } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            return runtime
                .block_on(bench::serve_ceiling(park, body.into_bytes()))
                .context("ceiling server");
        }
        ScenarioCommand::Commands {
            common,
            providers,
            drivers,
        } => (
            common,
            Scenario::Commands(CommandsOptions { providers, drivers }),
        ),
        ScenarioCommand::Discovery {
            common,
            instances,
            services,
            watchers,
            changes,
        } => (
            common,
            Scenario::Discovery(DiscoveryOptions {
                instances,
                services,
                watchers,
                changes,
            }),
        ),
        ScenarioCommand::Ceiling { common, load } => (common, Scenario::Ceiling(load.options())),
    };
    if let Some(rate) = match &scenario {
        Scenario::Read(o) | Scenario::Write(o) | Scenario::Ceiling(o) => o.rate,
        _ => None,
    } {
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!("--rate must be a positive number of requests per second, not {rate}");
        }
    }
    let default_duration = match scenario {
        Scenario::Fleet(_) => Duration::from_secs(45),
        _ => Duration::from_secs(10),
    };
    let common = Common {
        target: common_args
            .url
            .clone()
            .map_or(Target::InProcess, Target::Url),
        duration: common_args.duration.unwrap_or(default_duration),
        warmup: common_args.warmup,
        runs: common_args.runs as usize,
        ceiling_first: false,
        access: common_args.access.bench_access(),
    };
    announce(&scenario, &common);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let progress = !common_args.quiet && !common_args.json;
    let report = runtime.block_on(bench::run(&scenario, &common, progress))?;
    if common_args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &common_args.html {
        std::fs::write(path, report.html())
            .with_context(|| format!("cannot write the HTML report to {}", path.display()))?;
    }
    Ok(())
}
