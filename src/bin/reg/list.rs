//! `reg list`: every register, sorted by name, one line each (`name=<json>`, what reg's Go CLI
//! prints and a shell user greps); `--metadata` makes each line a JSON object, `--json` prints
//! the single object scripts parse; with `--stay`, one JSON line per change.

use reg::client::{Client, ReadQuery, Update};
use reg::{Json, Revision};

use crate::common::{self, Object, RegistryArg};
use crate::watch;

/// The arguments of `reg list` (its help is on `Command::List` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// Include each register's metadata: each line is then a JSON object
    /// {"name":…,"value":…,"metadata":…}.
    #[arg(long, short)]
    metadata: bool,

    /// Print one JSON object of every register ({"name":value,…}; with --metadata,
    /// {"name":{"value":…,"metadata":…},…}) instead of a line per register.
    #[arg(long, conflicts_with = "stay")]
    json: bool,

    /// Keep running and print a JSON line per change, until interrupted.
    #[arg(long, short)]
    stay: bool,
}

pub(crate) fn run(args: ListArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let client = registry.client()?;
    common::init_logging();
    common::runtime()?.block_on(async {
        if !args.stay {
            let Some(wire) = client.wire() else {
                anyhow::bail!("list needs a remote registry");
            };
            let read = wire.read(&ReadQuery::all()).await?;
            if args.json {
                let mut object = Object::new();
                for register in &read.registers {
                    let entry = if args.metadata {
                        common::value_with_metadata(&register.value, register.metadata.as_ref())
                    } else {
                        register.value.to_string()
                    };
                    object = object.member(&register.name, &entry);
                }
                common::emit(&object.finish())?;
                return Ok(());
            }
            for register in &read.registers {
                let line = if args.metadata {
                    Object::new()
                        .member("name", &common::json_string(&register.name))
                        .member("value", &register.value)
                        .member(
                            "metadata",
                            &common::metadata_or_empty(register.metadata.as_ref()),
                        )
                        .finish()
                } else {
                    format!("{}={}", line_name(&register.name), register.value)
                };
                common::emit(&line)?;
            }
            return Ok(());
        }
        stay(&client, args.metadata).await
    })
}

/// `--stay`: every register as a `set` line, then one line per change. Against a server with
/// the watch stream the removals say `delete` or `expire` and a reconnect resumes without a
/// gap; against one without it (Part A only), long polls, and a removal is `removed` since
/// such a server does not say why.
async fn stay(client: &Client, metadata: bool) -> anyhow::Result<()> {
    let Some(wire) = client.wire() else {
        anyhow::bail!("list needs a remote registry");
    };
    let read = wire.read(&ReadQuery::all().detail(true)).await?;
    if let Some(index) = read.index {
        match wire.watch::<String>(&[], Some(index)).await {
            Ok(stream) => {
                for register in &read.registers {
                    common::emit(&set_line(
                        &register.name,
                        &register.value,
                        metadata.then_some(register.metadata.as_ref()),
                        register.revision,
                    ))?;
                }
                return watch::follow(wire, &[], stream, Some(index), |event| {
                    let line = match &event.value {
                        Some(value) => set_line(
                            &event.name,
                            value,
                            metadata.then_some(event.metadata.as_ref()),
                            event.revision,
                        ),
                        None => removal_line(&event.name, event.kind.as_str(), event.revision),
                    };
                    common::emit(&line)
                })
                .await;
            }
            Err(error) if error.is_unsupported() => {}
            Err(error) => return Err(error.into()),
        }
    }
    let mut all = client.consume_all();
    while let Some(update) = all.next().await {
        let line = match &update {
            Update::Set {
                name,
                value,
                metadata: meta,
                revision,
                ..
            } => set_line(name, value, metadata.then_some(meta.as_ref()), *revision),
            Update::Removed { name, revision, .. } => removal_line(name, "removed", *revision),
            _ => continue,
        };
        common::emit(&line)?;
    }
    Ok(())
}

/// A `set` line; `metadata` is `Some` with `--metadata`.
fn set_line(
    name: &str,
    value: &Json,
    metadata: Option<Option<&Json>>,
    revision: Option<Revision>,
) -> String {
    let mut line = Object::new()
        .member("event", &common::json_string("set"))
        .member("name", &common::json_string(name))
        .member("value", value);
    if let Some(metadata) = metadata {
        line = line.member("metadata", &common::metadata_or_empty(metadata));
    }
    with_revision(line, revision)
}

fn removal_line(name: &str, event: &str, revision: Option<Revision>) -> String {
    with_revision(
        Object::new()
            .member("event", &common::json_string(event))
            .member("name", &common::json_string(name)),
        revision,
    )
}

/// A name as it starts a `name=<json>` line: as is, unless it holds a control character (a
/// newline would split the line) or starts with `"`; then as a JSON string.
fn line_name(name: &str) -> String {
    if name.chars().any(char::is_control) || name.starts_with('"') {
        common::json_string(name).to_string()
    } else {
        name.to_owned()
    }
}

fn with_revision(line: Object, revision: Option<u64>) -> String {
    match revision {
        Some(revision) => line.member("revision", &revision),
        None => line,
    }
    .finish()
}
