//! `reg service register|deregister|list|show|watch`: discovery from the command line.

use std::time::Duration;

use reg::client::ServiceEvent;
use reg::discovery::{Filter, Instance, InstanceEntry, Status};

use crate::common::{self, RegistryArg, Signals};
use crate::serve::parse_duration;

/// How long deregistering may take on the way out; after that it expires by its TTL.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The arguments of `reg service` (its help is on `Command::Service` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ServiceCommand {
    /// Register an instance and keep it alive until Ctrl-C (SIGINT) or SIGTERM, which
    /// deregister it. If this process is killed, the instance expires after --ttl.
    #[command(disable_version_flag = true)]
    Register(RegisterArgs),
    /// Remove an instance now.
    Deregister {
        /// The service.
        service: String,
        /// The instance id.
        id: String,
    },
    /// List the services: name, instances, passing, tags, versions.
    List {
        /// One JSON line per service instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a service's instances, one JSON line each (filters combine).
    #[command(disable_version_flag = true)]
    Show {
        /// The service.
        service: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Stream a service's changes as JSON lines: {"event":"added"|"changed"|"removed",
    /// "instance":{…}}, and {"event":"stale"|"fresh"} when the registry goes away or comes
    /// back. The current instances come first, as added. Until interrupted.
    Watch {
        /// The service.
        service: String,
    },
}

#[derive(Debug, clap::Args)]
struct RegisterArgs {
    /// The service (letters, digits, `.`, `_`, `-`).
    service: String,
    /// The instance id, unique within the service.
    id: String,
    /// The address it serves on.
    #[arg(long, default_value = "")]
    address: String,
    /// The port it serves on.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The version it runs.
    #[arg(long, default_value = "")]
    version: String,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata as key=value (repeat for more).
    #[arg(long = "meta", value_parser = parse_pair)]
    meta: Vec<(String, String)>,
    /// The host it runs on (for "prefer the same host").
    #[arg(long, default_value = "")]
    node: String,
    /// Its health: passing, warning or critical.
    #[arg(long, default_value = "passing", value_parser = parse_status)]
    status: Status,
    /// Time to live: the instance expires this long after the last refresh (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Only passing instances.
    #[arg(long)]
    passing: bool,
    /// Only instances with this tag (repeat: all of them).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only this version.
    #[arg(long)]
    version: Option<String>,
    /// Only instances whose metadata has key=value (repeat: all of them).
    #[arg(long = "meta", value_parser = parse_pair)]
    meta: Vec<(String, String)>,
    /// Only instances with this status.
    #[arg(long, value_parser = parse_status)]
    status: Option<Status>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

fn parse_status(text: &str) -> Result<Status, String> {
    Status::parse(text).ok_or_else(|| format!("{text:?} is not passing, warning or critical"))
}

pub(crate) fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let client = args.registry.client()?;
    common::init_logging();
    let runtime = common::runtime()?;
    match args.command {
        ServiceCommand::Register(register) => runtime.block_on(register_and_stay(client, register)),
        ServiceCommand::Deregister { service, id } => {
            let wire = args.registry.wire()?;
            let name = reg::discovery::register_name(&service, &id);
            runtime.block_on(wire.remove(&[name.as_str()]))?;
            Ok(())
        }
        ServiceCommand::List { json } => {
            let wire = args.registry.wire()?;
            let services = runtime.block_on(wire.services())?;
            if json {
                for s in &services.services {
                    let line = serde_json::json!({
                        "name": s.name, "instances": s.instances, "passing": s.passing,
                        "tags": s.tags, "versions": s.versions, "index": s.index,
                    });
                    common::emit(&line.to_string())?;
                }
            } else {
                let width = services
                    .services
                    .iter()
                    .map(|s| s.name.len())
                    .max()
                    .unwrap_or(0);
                for s in &services.services {
                    common::emit(&format!(
                        "{:width$}  {} instance{} ({} passing){}{}",
                        s.name,
                        s.instances,
                        if s.instances == 1 { "" } else { "s" },
                        s.passing,
                        list_suffix("tags", &s.tags),
                        list_suffix("versions", &s.versions),
                    ))?;
                }
            }
            Ok(())
        }
        ServiceCommand::Show { service, filter } => {
            let wire = args.registry.wire()?;
            let filter = Filter {
                version: filter.version,
                tags: filter.tags,
                meta: filter.meta,
                status: filter.status,
                passing: filter.passing,
            };
            let listed = runtime.block_on(wire.service(&service, &filter, None, None))?;
            for entry in &listed.instances {
                common::emit(&entry_line(entry))?;
            }
            Ok(())
        }
        ServiceCommand::Watch { service } => runtime.block_on(watch(client, service)),
    }
}

fn list_suffix(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("  {what}: {}", items.join(","))
    }
}

/// An instance as one JSON object: its canonical value (endpoints exactly as stored) and
/// its revision.
fn entry_line(entry: &InstanceEntry) -> String {
    let value = entry.value().as_str();
    let fields = value.strip_suffix('}').unwrap_or(value);
    format!("{fields},\"revision\":{}}}", entry.revision)
}

async fn register_and_stay(client: reg::client::Client, args: RegisterArgs) -> anyhow::Result<()> {
    let mut instance = Instance::new(&args.service, &args.id)
        .address(&args.address)
        .port(args.port)
        .version(&args.version)
        .node(&args.node)
        .status(args.status);
    instance.tags = args.tags;
    instance.meta = args.meta.into_iter().collect();
    let mut signals = Signals::new()?;
    let ttl = (!args.ttl.is_zero()).then_some(args.ttl);
    let registration = tokio::select! {
        registration = client.register(&instance, ttl) => registration?,
        () = signals.next() => return Ok(()),
    };
    eprintln!(
        "reg: registered {} (Ctrl-C deregisters it)",
        instance.register_name()
    );
    signals.next().await;
    if tokio::time::timeout(REMOVE_TIMEOUT, registration.deregister())
        .await
        .is_err()
    {
        eprintln!(
            "reg: could not deregister within {}; it expires by its TTL",
            common::show_duration(REMOVE_TIMEOUT)
        );
    }
    Ok(())
}

async fn watch(client: reg::client::Client, service: String) -> anyhow::Result<()> {
    let view = client.discover(&service);
    let mut events = view.events();
    let mut signals = Signals::new()?;
    loop {
        let event = tokio::select! {
            () = signals.next() => return Ok(()),
            event = events.next() => event,
        };
        let Some(event) = event else {
            anyhow::bail!("the registry closed");
        };
        let line = match event {
            ServiceEvent::Added(entry) => {
                format!(
                    "{{\"event\":\"added\",\"instance\":{}}}",
                    entry_line(&entry)
                )
            }
            ServiceEvent::Changed(entry) => {
                format!(
                    "{{\"event\":\"changed\",\"instance\":{}}}",
                    entry_line(&entry)
                )
            }
            ServiceEvent::Removed(entry) => {
                format!(
                    "{{\"event\":\"removed\",\"instance\":{}}}",
                    entry_line(&entry)
                )
            }
            ServiceEvent::Stale(true) => {
                let error = view.state().error.clone().unwrap_or_default();
                serde_json::json!({"event": "stale", "error": error}).to_string()
            }
            ServiceEvent::Stale(false) => r#"{"event":"fresh"}"#.to_owned(),
        };
        common::emit(&line)?;
    }
}
