//! What the client subcommands share: exit statuses, the registry URL, JSON output lines,
//! reading stdin, signals, and waiting (bounded) for registers to reach a state.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reg::client::{
    Client, ClientBuilder, ClientError, ReadQuery, ReadResponse, RegisterValue, WireClient,
    WireClientBuilder,
};
use reg::Json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

/// Exit statuses. Scripts depend on them: never renumber, only add.
pub(crate) mod exit {
    /// An error: bad input, a registry that cannot be reached or answered with an error.
    pub(crate) const ERROR: u8 = 1;
    /// `get`: a register did not exist before the timeout ran out.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// `set`: the provider did not confirm the change before the timeout ran out.
    pub(crate) const NOT_CONFIRMED: u8 = 4;
}

/// The exit statuses, for `reg --help`.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (also after Ctrl-C/SIGTERM for provide)
  1  error: invalid input, bad registry URL, registry unreachable or answered an error
  2  usage error (invalid command line)
  3  get: a register did not exist before --timeout ran out
  4  set: the provider did not confirm the change before --timeout ran out

The registry URL comes from --registry or the REGISTRY environment variable
(default http://localhost:8080). For an https:// registry, --ca (REG_CA) names the CA
to trust (default: the system bundle /etc/ssl/certs/ca-certificates.crt), --cert and
--key (REG_CERT, REG_KEY) a client certificate; --token (REG_TOKEN) is sent as a bearer
token. Values are JSON, in and out.";

/// An error that ends the program with a particular exit status (see [`exit`]).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The registry URL, shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RegistryArg {
    /// The registry's URL: `http[s]://host[:port][/prefix]`.
    #[arg(
        long,
        env = "REGISTRY",
        default_value = "http://localhost:8080",
        value_name = "URL"
    )]
    pub(crate) registry: String,
    #[command(flatten)]
    pub(crate) access: AccessArgs,
}

impl RegistryArg {
    /// A high-level client for the registry; a bad URL or TLS file is an error naming what
    /// is wrong.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        self.access
            .client_builder(Client::builder())
            .remote(&self.registry)
            .map_err(|error| url_error(&error))
    }

    /// A wire client for the registry.
    pub(crate) fn wire(&self) -> anyhow::Result<WireClient> {
        self.access
            .wire_builder(WireClient::builder(&self.registry))
            .build()
            .map_err(|error| url_error(&error))
    }
}

/// How to reach a registry beyond its URL: TLS trust, a client certificate, a bearer token.
/// Shared by the client subcommands and `reg bench`.
#[derive(Clone, Default, clap::Args)]
pub(crate) struct AccessArgs {
    /// PEM file of the CA certificate(s) to trust for an https:// registry with a private
    /// CA [default: the system bundle, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, env = "REG_CA", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Client certificate (PEM) for a registry that requires mutual TLS; needs --key.
    #[arg(long, env = "REG_CERT", value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --cert.
    #[arg(long, env = "REG_KEY", value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Bearer token sent with every request, for a registry that checks tokens (`reg token
    /// new` makes one). Prefer REG_TOKEN: a command line is visible to other local users.
    #[arg(long, env = "REG_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl fmt::Debug for AccessArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessArgs")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            // The token is a secret: say whether there is one, never what it is.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AccessArgs {
    /// The certificate and key, which clap only lets through together.
    fn client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        self.cert.clone().zip(self.key.clone())
    }

    fn client_builder(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.ca {
            builder = builder.ca_file(ca);
        }
        if let Some((cert, key)) = self.client_cert() {
            builder = builder.client_cert(cert, key);
        }
        builder
    }

    fn wire_builder(&self, mut builder: WireClientBuilder) -> WireClientBuilder {
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.ca {
            builder = builder.ca_file(ca);
        }
        if let Some((cert, key)) = self.client_cert() {
            builder = builder.client_cert(cert, key);
        }
        builder
    }

    /// The same for `reg bench`'s load generator.
    pub(crate) fn bench_access(&self) -> reg::bench::Access {
        reg::bench::Access {
            ca_file: self.ca.clone(),
            client_cert: self.client_cert(),
            token: self.token.clone(),
        }
    }
}

fn url_error(error: &ClientError) -> anyhow::Error {
    if error.is_invalid_url() {
        anyhow::anyhow!("{error} (set it with --registry or REGISTRY)")
    } else {
        anyhow::anyhow!("{error}")
    }
}

/// A single-threaded Tokio runtime: the client subcommands do little at a time.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Logs warnings (e.g. the client's reconnects) to stderr as plain `reg: …` lines, the way
/// the subcommands report everything else; `RUST_LOG` overrides the level.
pub(crate) fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Fails only if a subscriber is already set, which is then good enough.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .event_format(PlainLine)
        .try_init();
}

/// Formats a log event as one line for a person: `reg: consumer poll failed: connection
/// refused; retrying in 400ms` rather than tracing's `WARN reg client: … error=… retry_in=…`.
struct PlainLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = PlainFields::default();
        event.record(&mut fields);
        writeln!(writer, "{}", fields.line())
    }
}

/// The fields of one event, gathered for [`PlainLine`].
#[derive(Default)]
struct PlainFields {
    message: String,
    error: Option<String>,
    retry_in: Option<String>,
    rest: Vec<String>,
}

impl PlainFields {
    fn line(&self) -> String {
        let message = self
            .message
            .strip_prefix("reg client: ")
            .unwrap_or(&self.message);
        let mut line = format!("reg: {message}");
        if let Some(error) = &self.error {
            line.push_str(": ");
            line.push_str(error);
        }
        if !self.rest.is_empty() {
            line.push_str(&format!(" ({})", self.rest.join(", ")));
        }
        if let Some(retry_in) = &self.retry_in {
            line.push_str("; retrying in ");
            line.push_str(retry_in);
        }
        line
    }
}

impl tracing::field::Visit for PlainFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "error" => self.error = Some(text),
            "retry_in" => self.retry_in = Some(text),
            name => self.rest.push(format!("{name} {text}")),
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "error" => self.error = Some(value.to_owned()),
            "retry_in" => self.retry_in = Some(value.to_owned()),
            name => self.rest.push(format!("{name} {value}")),
        }
    }
}

/// Parses a JSON argument; the error says which argument and, for a bare word, how to quote
/// a string.
pub(crate) fn parse_json_arg(what: &str, text: &str) -> anyhow::Result<Json> {
    Json::parse(text.as_bytes()).map_err(|error| {
        let hint = if text.trim_start().starts_with(|c: char| c.is_alphabetic())
            && !matches!(text.trim(), "true" | "false" | "null")
        {
            format!(" (a JSON string needs quotes: '\"{}\"')", text.trim())
        } else {
            String::new()
        };
        anyhow::anyhow!("{what} {text:?} is not valid JSON: {error}{hint}")
    })
}

/// Parses metadata: a JSON object.
pub(crate) fn parse_metadata_arg(text: &str) -> anyhow::Result<Option<Json>> {
    let metadata = parse_json_arg("metadata", text)?;
    if metadata.is_null() || metadata.is_empty_object() {
        return Ok(None);
    }
    if !metadata.is_object() {
        anyhow::bail!("metadata must be a JSON object, got {metadata}");
    }
    Ok(Some(metadata))
}

/// Reads stdin to the end and parses it as one JSON value.
pub(crate) fn read_json_stdin(what: &str) -> anyhow::Result<Json> {
    if io::stdin().is_terminal() {
        eprintln!("reg: reading the {what} from stdin as JSON (end it with Ctrl-D)");
    }
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    if input.iter().all(u8::is_ascii_whitespace) {
        anyhow::bail!("no {what} given: pass it as an argument or as JSON on stdin");
    }
    Json::parse(&input)
        .map_err(|error| anyhow::anyhow!("{what} on stdin is not valid JSON: {error}"))
}

/// A JSON string for `text`.
pub(crate) fn json_string(text: &str) -> Json {
    Json::from(text)
}

/// Builds a JSON object from members whose values are already JSON text.
#[derive(Debug, Default)]
pub(crate) struct Object(String);

impl Object {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends `"key":value`; `value` must be JSON text.
    pub(crate) fn member(mut self, key: &str, value: &dyn fmt::Display) -> Self {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(json_string(key).as_str());
        self.0.push(':');
        self.0.push_str(&value.to_string());
        self
    }

    pub(crate) fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// Metadata as the CLI prints it: an object, `{}` for none.
pub(crate) fn metadata_or_empty(metadata: Option<&Json>) -> String {
    metadata.map_or_else(|| "{}".to_owned(), |m| m.as_str().to_owned())
}

/// `{"value":…,"metadata":…}`.
pub(crate) fn value_with_metadata(value: &Json, metadata: Option<&Json>) -> String {
    Object::new()
        .member("value", value)
        .member("metadata", &metadata_or_empty(metadata))
        .finish()
}

/// Writes one line to stdout and flushes it, so a reader of a pipe sees it at once.
pub(crate) fn emit(line: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// An error and its causes, `outer: inner`, leaving out a cause whose text the message already
/// holds (the client's errors spell out their sources themselves).
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Whether an error is stdout going away (`reg watch | head -1`): the program ends quietly.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Longest stdin line taken: 16 MiB (the server takes 1 MiB bodies by default; far beyond
/// that the input is not a value).
const MAX_LINE_BYTES: usize = 16 << 20;

/// One line of stdin.
#[derive(Debug)]
pub(crate) enum StdinLine {
    /// A line (without its end), numbered from 1.
    Line { number: u64, bytes: Vec<u8> },
    /// A line longer than [`MAX_LINE_BYTES`], skipped.
    TooLong { number: u64 },
    /// Reading failed; no more lines.
    Failed(io::Error),
}

/// Reads stdin line by line on a thread of its own (reading a pipe or a terminal blocks) and
/// hands each line over; the channel closes at end of input.
pub(crate) fn stdin_lines() -> mpsc::Receiver<StdinLine> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut reader = stdin.lock();
        let mut number = 0_u64;
        loop {
            number += 1;
            let mut bytes = Vec::new();
            let limit = u64::try_from(MAX_LINE_BYTES + 1).unwrap_or(u64::MAX);
            let line = match (&mut reader).take(limit).read_until(b'\n', &mut bytes) {
                Ok(0) => return,
                Ok(_) if bytes.last() == Some(&b'\n') => {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                    StdinLine::Line { number, bytes }
                }
                Ok(_) if bytes.len() > MAX_LINE_BYTES => {
                    // Skip the rest of the line.
                    let mut rest = Vec::new();
                    if let Err(error) = reader.read_until(b'\n', &mut rest) {
                        let _ = tx.blocking_send(StdinLine::Failed(error));
                        return;
                    }
                    StdinLine::TooLong { number }
                }
                // The last line, without a newline.
                Ok(_) => StdinLine::Line { number, bytes },
                Err(error) => StdinLine::Failed(error),
            };
            let failed = matches!(line, StdinLine::Failed(_));
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// SIGINT and SIGTERM.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (from then on the signals no longer kill the process).
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?,
        })
    }

    /// Waits for the next signal.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal is consumed only when this returns.
    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A long poll that comes back this much before its wait ran out, with nothing new, is a
/// server answering at once (shutting down): pause before the next one.
const EARLY_ANSWER_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait of one poll against a server without `index` (Part A only): a change between
/// two polls is then seen at the latest this much later.
const FALLBACK_POLL: Duration = Duration::from_millis(250);

/// Reads `names` until `done` holds for the answer or `timeout` runs out, long-polling in
/// between (with `index`, so no change is missed). Returns the last answer and whether `done`
/// held.
pub(crate) async fn read_until(
    wire: &WireClient,
    names: &[String],
    detail: bool,
    timeout: Duration,
    mut done: impl FnMut(&ReadResponse) -> bool,
) -> Result<(ReadResponse, bool), ClientError> {
    let deadline = Instant::now() + timeout;
    let query = ReadQuery::names(names).detail(detail);
    let mut read = wire.read(&query).await?;
    loop {
        if done(&read) {
            return Ok((read, true));
        }
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        if remaining < Duration::from_millis(1) {
            return Ok((read, false));
        }
        let poll = match read.index {
            Some(index) => query.clone().wait(remaining).index(index),
            None => query.clone().wait(remaining.min(FALLBACK_POLL)),
        };
        let previous = read.index;
        read = wire.read(&poll).await?;
        let early = started.elapsed() < remaining / 2;
        if early && previous.is_some() && read.index == previous {
            tokio::time::sleep(EARLY_ANSWER_PAUSE.min(remaining)).await;
        }
    }
}

/// The register called `name` in an answer.
pub(crate) fn find<'a>(read: &'a ReadResponse, name: &str) -> Option<&'a RegisterValue> {
    read.registers.iter().find(|r| &*r.name == name)
}

/// `"a", "b"` for a message.
pub(crate) fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration as the user typed it, for messages.
pub(crate) fn show_duration(duration: Duration) -> String {
    reg::format_go_duration(duration)
}

/// Names given on the command line, duplicates dropped, order kept.
pub(crate) fn unique(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter(|name| seen.insert(name.as_str()))
        .cloned()
        .collect()
}
