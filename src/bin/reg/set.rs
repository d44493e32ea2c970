//! `reg set`: a change request (`PUT /consumer`), then wait until the provider confirms it.

use std::time::Duration;

use crate::common::{self, exit, Failure, RegistryArg};
use crate::get::View;
use crate::serve::parse_duration;

/// The arguments of `reg set` (its help is on `Command::Set` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArg,
    /// The register.
    name: String,

    /// The value to ask for, as JSON (`42`, `true`, `'"on"'`, `'{"x":1}'`); read from stdin
    /// when absent.
    value: Option<String>,

    /// How long to wait for the provider to confirm (Go duration, `0`: check once).
    #[arg(long, short, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,

    /// After the confirmation, keep printing the register's value on every update, until
    /// interrupted.
    #[arg(long, short)]
    stay: bool,
}

pub(crate) fn run(args: SetArgs) -> anyhow::Result<()> {
    let registry = &args.registry;
    let client = registry.client()?;
    let value = match &args.value {
        Some(text) => common::parse_json_arg("value", text)?,
        None => common::read_json_stdin("value")?,
    };
    common::init_logging();
    common::runtime()?.block_on(async {
        let Some(wire) = client.wire().cloned() else {
            anyhow::bail!("set needs a remote registry");
        };
        wire.request(&[(args.name.as_str(), value.clone())]).await?;
        let names = [args.name.clone()];
        let (read, confirmed) = common::read_until(&wire, &names, false, args.timeout, |read| {
            common::find(read, &args.name).is_some_and(|register| register.value == value)
        })
        .await?;
        if !confirmed {
            let now = match common::find(&read, &args.name) {
                Some(register) => format!("its value is still {}", register.value),
                None => "the register does not exist".to_owned(),
            };
            return Err(Failure::new(
                exit::NOT_CONFIRMED,
                format!(
                    "the provider of {:?} did not confirm {value} within {} ({now}); \
                     the request stays pending until a provider takes it",
                    args.name,
                    common::show_duration(args.timeout)
                ),
            )
            .into());
        }
        if args.stay {
            let mut view = View::new(names.to_vec(), false);
            view.set(&args.name, value, None);
            let first = view.render();
            if let Some(line) = &first {
                common::emit(line)?;
            }
            view.follow(&client, read.index, first).await?;
        }
        Ok(())
    })
}
