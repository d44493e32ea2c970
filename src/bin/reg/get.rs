//! `reg get`: current values as JSON, waiting (bounded) for registers that do not exist yet;
//! with `--stay`, every update.

use std::collections::HashMap;
use std::time::Duration;

use reg::client::{Client, Update};
use reg::{Json, Revision};
use tokio::sync::mpsc;

use crate::common::{self, exit, Failure, Object, RegistryArg};
use crate::serve::parse_duration;
use crate::watch;

/// The arguments of `reg get` (its help is on `Command::Get` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// The registers to read.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,

    /// Print {"value":…,"metadata":…} instead of the bare value.
    #[arg(long, short)]
    metadata: bool,

    /// Keep running and print a JSON line on every update, until interrupted.
    #[arg(long, short)]
    stay: bool,

    /// How long to wait for registers that do not exist yet (Go duration, `0`: not at all).
    #[arg(long, short, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
}

pub(crate) fn run(args: GetArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let client = registry.client()?;
    common::init_logging();
    common::runtime()?.block_on(get(args, client))
}

async fn get(args: GetArgs, client: Client) -> anyhow::Result<()> {
    let names = common::unique(&args.names);
    let Some(wire) = client.wire().cloned() else {
        anyhow::bail!("get needs a remote registry");
    };
    let (read, found) = common::read_until(&wire, &names, false, args.timeout, |read| {
        names.iter().all(|name| common::find(read, name).is_some())
    })
    .await?;
    if !found {
        let missing: Vec<&str> = names
            .iter()
            .filter(|name| common::find(&read, name).is_none())
            .map(String::as_str)
            .collect();
        let noun = if missing.len() == 1 {
            "register"
        } else {
            "registers"
        };
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "{noun} {} not found within {}",
                common::quoted_list(&missing),
                common::show_duration(args.timeout)
            ),
        )
        .into());
    }
    let mut view = View::new(names, args.metadata);
    for register in &read.registers {
        view.set(
            &register.name,
            register.value.clone(),
            register.metadata.clone(),
        );
    }
    let first = view.render();
    if let Some(line) = &first {
        common::emit(line)?;
    }
    if args.stay {
        view.follow(&client, read.index, first).await?;
    }
    Ok(())
}

/// What `get` (and `set --stay`) prints for a set of names.
#[derive(Debug)]
pub(crate) struct View {
    /// The names, in the order given.
    names: Vec<String>,
    metadata: bool,
    /// The registers that exist: value and metadata.
    state: HashMap<String, (Json, Option<Json>)>,
}

impl View {
    pub(crate) fn new(names: Vec<String>, metadata: bool) -> Self {
        Self {
            names,
            metadata,
            state: HashMap::new(),
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: Json, metadata: Option<Json>) {
        if self.names.iter().any(|n| n == name) {
            self.state.insert(name.to_owned(), (value, metadata));
        }
    }

    fn entry(&self, value: &Json, metadata: Option<&Json>) -> String {
        if self.metadata {
            common::value_with_metadata(value, metadata)
        } else {
            value.to_string()
        }
    }

    /// The output line: one name's value (`None` while it does not exist), or the object of
    /// the names that exist.
    pub(crate) fn render(&self) -> Option<String> {
        if let [name] = self.names.as_slice() {
            let (value, metadata) = self.state.get(name)?;
            return Some(self.entry(value, metadata.as_ref()));
        }
        let mut object = Object::new();
        for name in &self.names {
            if let Some((value, metadata)) = self.state.get(name) {
                object = object.member(name, &self.entry(value, metadata.as_ref()));
            }
        }
        Some(object.finish())
    }

    /// Prints a line whenever the output changes, until the process is interrupted. `last`
    /// is the line already printed, `from` the revision it is at (`X-Reg-Index`). With the
    /// watch stream (Part B), follows it from there; otherwise long polls.
    pub(crate) async fn follow(
        mut self,
        client: &Client,
        from: Option<Revision>,
        last: Option<String>,
    ) -> anyhow::Result<()> {
        let Some(wire) = client.wire() else {
            anyhow::bail!("--stay needs a remote registry");
        };
        if let Some(from) = from {
            match wire.watch(&self.names, Some(from)).await {
                Ok(stream) => {
                    let names = self.names.clone();
                    let mut last = last;
                    return watch::follow(wire, &names, stream, Some(from), |event| {
                        match &event.value {
                            Some(value) => {
                                self.set(&event.name, value.clone(), event.metadata.clone());
                            }
                            None => {
                                let what = match event.kind.as_str() {
                                    "expire" => "expired",
                                    "delete" => "was deleted",
                                    _ => "is gone",
                                };
                                self.remove(&event.name, what);
                            }
                        }
                        self.print_if_changed(&mut last)
                    })
                    .await;
                }
                Err(error) if error.is_unsupported() => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.poll(client, last).await
    }

    /// Follows with long polls: against a server without the watch stream, which does not say
    /// whether a register expired or was deleted.
    async fn poll(mut self, client: &Client, mut last: Option<String>) -> anyhow::Result<()> {
        let (tx, mut updates) = mpsc::channel(64);
        for name in &self.names {
            let mut consumer = client.consume(name);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(update) = consumer.next().await {
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while let Some(update) = updates.recv().await {
            match update {
                Update::Set {
                    name,
                    value,
                    metadata,
                    ..
                } => self.set(&name, value, metadata),
                Update::Removed { name, .. } => self.remove(&name, "is gone"),
                _ => {}
            }
            self.print_if_changed(&mut last)?;
        }
        Ok(())
    }

    /// A register went away; `what` says how (`expired`, `was deleted`, `is gone`).
    fn remove(&mut self, name: &str, what: &str) {
        if self.state.remove(name).is_some() {
            eprintln!("reg: register {name:?} {what}");
        }
    }

    /// Prints the output line if it differs from `last`.
    fn print_if_changed(&self, last: &mut Option<String>) -> std::io::Result<()> {
        let line = self.render();
        if line != *last {
            if let Some(line) = &line {
                common::emit(line)?;
            }
            *last = line;
        }
        Ok(())
    }
}
