//! `reg provide`: publish a register and keep it alive; new values from stdin, change
//! requests to stdout (and applied unless `--read-only`); SIGINT/SIGTERM remove it.

use std::time::Duration;

use reg::client::{Client, Provider};
use reg::Json;

use crate::common::{self, Object, RegistryArg, Signals, StdinLine};
use crate::serve::parse_duration;

/// How long removing the register may take on the way out; after that it expires by its TTL.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The arguments of `reg provide` (its help is on `Command::Provide` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct ProvideArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// The register.
    name: String,

    /// Its first value, as JSON (`null` when absent).
    value: Option<String>,

    /// Its metadata: a JSON object.
    metadata: Option<String>,

    /// Time to live: the register expires this long after the last refresh, e.g. when this
    /// process is killed (Go duration; `0`: the registry's default, 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,

    /// Print change requests without applying them.
    #[arg(long)]
    read_only: bool,
}

pub(crate) fn run(args: ProvideArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let client = registry.client()?;
    let value = match &args.value {
        Some(text) => common::parse_json_arg("value", text)?,
        None => Json::null(),
    };
    let metadata = match &args.metadata {
        Some(text) => common::parse_metadata_arg(text)?,
        None => None,
    };
    common::init_logging();
    common::runtime()?.block_on(provide(args, client, value, metadata))
}

async fn provide(
    args: ProvideArgs,
    client: Client,
    value: Json,
    metadata: Option<Json>,
) -> anyhow::Result<()> {
    // Before the first write: a signal from then on removes the register.
    let mut signals = Signals::new()?;
    let ttl = (!args.ttl.is_zero()).then_some(args.ttl);
    let provider = tokio::select! {
        provider = client.provide(&args.name, value, metadata, ttl) => provider?,
        () = signals.next() => {
            // The first write may have been sent already: take it back.
            if let Some(wire) = client.wire() {
                let names = [args.name.as_str()];
                let _ = tokio::time::timeout(REMOVE_TIMEOUT, wire.remove(&names)).await;
            }
            return Ok(());
        }
    };
    serve(&args, provider, &mut signals).await
}

/// Runs until a signal (`Ok`) or stdout fails; removes the register either way.
async fn serve(
    args: &ProvideArgs,
    mut provider: Provider,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let mut lines = common::stdin_lines();
    let mut stdin_open = true;
    let result = loop {
        tokio::select! {
            () = signals.next() => break Ok(()),
            line = lines.recv(), if stdin_open => match line {
                Some(line) => new_value(&provider, line, &mut stdin_open).await,
                None => stdin_open = false,
            },
            request = provider.next_request() => {
                let Some(value) = request else {
                    break Err(anyhow::anyhow!("the registry closed"));
                };
                let line = Object::new()
                    .member("name", &common::json_string(&args.name))
                    .member("value", &value)
                    .finish();
                if let Err(error) = common::emit(&line) {
                    break Err(anyhow::Error::from(error).context("cannot write to stdout"));
                }
                if !args.read_only {
                    if let Err(error) = provider.update(value).await {
                        eprintln!(
                            "reg: applying the change request failed \
                             (retried at the next refresh): {error}"
                        );
                    }
                }
            }
        }
    };
    if tokio::time::timeout(REMOVE_TIMEOUT, provider.remove())
        .await
        .is_err()
    {
        eprintln!(
            "reg: could not remove {:?} within {}; it expires by its TTL",
            args.name,
            common::show_duration(REMOVE_TIMEOUT)
        );
    }
    result
}

/// Applies one stdin line: a new value, or a report on stderr.
async fn new_value(provider: &Provider, line: StdinLine, stdin_open: &mut bool) {
    match line {
        StdinLine::Line { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => {}
        StdinLine::Line { number, bytes } => match Json::parse(&bytes) {
            Ok(value) => {
                if let Err(error) = provider.update(value).await {
                    eprintln!(
                        "reg: writing the value of stdin line {number} failed \
                         (retried at the next refresh): {error}"
                    );
                }
            }
            Err(error) => eprintln!("reg: stdin line {number}: not valid JSON ({error}); skipped"),
        },
        StdinLine::TooLong { number } => {
            eprintln!("reg: stdin line {number}: longer than 16 MiB; skipped");
        }
        StdinLine::Failed(error) => {
            eprintln!("reg: reading stdin failed: {error}; no more values from stdin");
            *stdin_open = false;
        }
    }
}
