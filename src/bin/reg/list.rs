//! `reg list`: every register, sorted by name, one line each (`name=<json>`, what reg's Go CLI
//! prints and a shell user greps); `--metadata` makes each line a JSON object, `--json` prints
//! the single object scripts parse; with `--stay`, one JSON line per change.

use reg::client::{ReadQuery, Update};

use crate::common::{self, Object, RegistryArg};

/// The arguments of `reg list` (its help is on `Command::List` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
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

pub(crate) fn run(args: ListArgs, registry: &RegistryArg) -> anyhow::Result<()> {
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
        let mut all = client.consume_all();
        while let Some(update) = all.next().await {
            let line = match &update {
                Update::Set {
                    name,
                    value,
                    metadata,
                    revision,
                    ..
                } => {
                    let mut line = Object::new()
                        .member("event", &common::json_string("set"))
                        .member("name", &common::json_string(name))
                        .member("value", value);
                    if args.metadata {
                        line =
                            line.member("metadata", &common::metadata_or_empty(metadata.as_ref()));
                    }
                    with_revision(line, *revision)
                }
                Update::Removed { name, revision, .. } => with_revision(
                    Object::new()
                        .member("event", &common::json_string("removed"))
                        .member("name", &common::json_string(name)),
                    *revision,
                ),
                _ => continue,
            };
            common::emit(&line)?;
        }
        Ok(())
    })
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
