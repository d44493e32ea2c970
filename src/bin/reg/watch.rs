//! `reg watch`: the `/v1/watch` event stream as JSON lines, resumed after a reconnect from
//! the last revision seen.

use std::time::Duration;

use reg::client::{WatchEvent, WatchStream, WireClient};
use reg::Revision;

use crate::common::{self, Object, RegistryArg};

/// First reconnect delay; doubled after each failure up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The arguments of `reg watch` (its help is on `Command::Watch` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// The registers to watch (all when none).
    #[arg(value_name = "NAME")]
    names: Vec<String>,
}

pub(crate) fn run(args: WatchArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let wire = registry.wire()?;
    common::init_logging();
    common::runtime()?.block_on(watch(&wire, &args.names))
}

async fn watch(wire: &WireClient, names: &[String]) -> anyhow::Result<()> {
    // The first connection's failure is the command's error: a wrong URL or an old server.
    let stream = wire.watch(names, None).await.map_err(|error| {
        if error.is_unsupported() {
            anyhow::anyhow!(
                "{} has no watch stream (a server without reg's Part B); \
                 use `reg list --stay` or `reg get --stay` instead",
                wire.url()
            )
        } else {
            error.into()
        }
    })?;
    follow(wire, names, stream, None, |event| {
        common::emit(&line(event))
    })
    .await
}

/// Follows a watch stream for `names` that was opened after revision `after`, handing each
/// event to `on_event`, until `on_event` fails (stdout closed). A lost connection is one
/// line on stderr (`reg: watch stream broke (…); reconnecting in 200ms`); the stream then
/// resumes from the last revision seen, so no change is missed. `get --stay`, `set --stay` and
/// `list --stay` follow the same way.
pub(crate) async fn follow(
    wire: &WireClient,
    names: &[String],
    mut stream: WatchStream,
    mut last: Option<Revision>,
    mut on_event: impl FnMut(&WatchEvent) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut delay = RECONNECT_MIN;
    loop {
        let ended = loop {
            match stream.next().await {
                Ok(Some(event)) => {
                    delay = RECONNECT_MIN;
                    if event.revision.is_some() {
                        last.clone_from(&event.revision);
                    }
                    on_event(&event)?;
                }
                Ok(None) => break "ended".to_owned(),
                Err(error) => break format!("broke ({error})"),
            }
        };
        eprintln!(
            "reg: watch stream {ended}; reconnecting in {}",
            common::show_duration(delay)
        );
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
            match wire.watch(names, last).await {
                Ok(next) => {
                    eprintln!("reg: reconnected");
                    stream = next;
                    break;
                }
                Err(error) => eprintln!(
                    "reg: reconnecting failed: {error}; next try in {}",
                    common::show_duration(delay)
                ),
            }
        }
    }
}

/// One event as a JSON line.
fn line(event: &WatchEvent) -> String {
    let mut line = Object::new()
        .member("event", &common::json_string(event.kind.as_str()))
        .member("name", &common::json_string(&event.name));
    if let Some(value) = &event.value {
        line = line.member("value", value).member(
            "metadata",
            &common::metadata_or_empty(event.metadata.as_ref()),
        );
    }
    if let Some(revision) = event.revision {
        line = line.member("revision", &revision);
    }
    line.finish()
}
