//! Helpers for the `reg` CLI tests: our server in process on 127.0.0.1:0, and the real binary
//! run against it with bounded waits (every wait has a deadline and fails the test with what
//! the process said, rather than hanging).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use reg::server::{RunningServer, Server};
use reg::{Json, Registry};

/// How long any one step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);
/// How often a condition is re-checked while waiting for it.
const POLL: Duration = Duration::from_millis(10);

pub fn json(text: &str) -> Json {
    Json::parse(text.as_bytes()).unwrap()
}

/// Waits until `condition` holds, at most [`STEP`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(POLL);
    }
}

/// A reg server on 127.0.0.1:0 in a runtime of its own, serving `registry`.
pub struct TestServer {
    pub registry: Registry,
    pub url: String,
    pub addr: std::net::SocketAddr,
    _server: RunningServer,
    runtime: tokio::runtime::Runtime,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(Registry::new())
    }

    pub fn start_with(registry: Registry) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(
                Server::builder()
                    .registry(registry.clone())
                    .bind("127.0.0.1:0"),
            )
            .unwrap();
        let addr = server.local_addr();
        Self {
            registry,
            url: format!("http://{addr}"),
            addr,
            _server: server,
            runtime,
        }
    }

    /// The `reg` binary with `REGISTRY` pointing at this server.
    pub fn reg(&self, args: &[&str]) -> Command {
        reg_at(&self.url, args)
    }

    pub fn set(&self, name: &str, value: &str) {
        self.registry
            .set(name, json(value), None, Some(Duration::from_secs(60)))
            .unwrap();
    }

    /// The register's value, if it exists.
    pub fn value(&self, name: &str) -> Option<String> {
        self.registry
            .get(name)
            .map(|register| register.value().as_str().to_owned())
    }
}

/// The `reg` binary with `REGISTRY=url`, no `RUST_LOG`, stdin empty.
pub fn reg_at(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reg"));
    command
        .args(args)
        .env("REGISTRY", url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// What a finished run left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs a command to its end, at most [`STEP`], with `input` on stdin.
pub fn run_with_input(mut command: Command, input: &str) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = thread::spawn(move || {
        // The command may exit without reading it all.
        let _ = stdin.write_all(input.as_bytes());
    });
    let (stdout, stdout_done) = drain(child.stdout.take().unwrap());
    let (stderr, stderr_done) = drain(child.stderr.take().unwrap());
    let status = wait_for_exit(&mut child, &stderr);
    // The pipes are at their end once the process is gone.
    stdout_done.join().unwrap();
    stderr_done.join().unwrap();
    writer.join().unwrap();
    Output {
        status,
        stdout: text(&stdout),
        stderr: text(&stderr),
    }
}

/// Runs a command to its end, at most [`STEP`].
pub fn run(command: Command) -> Output {
    run_with_input(command, "")
}

fn text(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&buffer);
    let done = thread::spawn(move || {
        let mut chunk = [0_u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            shared.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buffer, done)
}

fn wait_for_exit(child: &mut Child, stderr: &Arc<Mutex<Vec<u8>>>) -> ExitStatus {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not exit in time; stderr: {}", text(stderr));
        }
        thread::sleep(POLL);
    }
}

/// A running `reg` whose stdout is read line by line. Killed when dropped.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    pub stdin: Option<ChildStdin>,
}

impl Running {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub fn start(mut command: Command) -> Self {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (stderr, _) = drain(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Self {
            child,
            lines,
            stderr,
            stdin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout, waiting at most [`STEP`].
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(STEP) {
            Ok(line) => line,
            Err(error) => panic!(
                "no line on stdout ({error}); stderr: {}",
                self.stderr_text()
            ),
        }
    }

    /// Skips lines until one satisfies `wanted`; returns it.
    pub fn line_where(&mut self, what: &str, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(error) => panic!("no line {what} ({error}); stderr: {}", self.stderr_text()),
            }
        }
    }

    /// A line already printed, without waiting.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// What the process wrote to stderr so far (read by a thread: it may lag behind stdout).
    pub fn stderr_text(&self) -> String {
        text(&self.stderr)
    }

    /// Waits until stderr contains `wanted`, at most [`STEP`].
    pub fn wait_stderr(&self, wanted: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let stderr = self.stderr_text();
            if stderr.contains(wanted) {
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never said {wanted:?}: {stderr}"
            );
            thread::sleep(POLL);
        }
    }

    /// Writes to the process's stdin.
    pub fn write(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal (`TERM`, `INT`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, at most [`STEP`].
    pub fn wait(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child, &self.stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP proxy in front of a server, which a test can cut: its connections are closed and new
/// ones refused until it lets them through again. For testing reconnects without losing the
/// server's state.
pub struct Proxy {
    pub url: String,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    refusing: bool,
    /// Both ends of every connection passed through, to cut them.
    sockets: Vec<std::net::TcpStream>,
}

impl Proxy {
    pub fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut state = shared.lock().unwrap();
                if state.refusing {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
                state.sockets.push(client);
                state.sockets.push(server);
            }
        });
        Self { url, state }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.refusing = true;
        for socket in state.sockets.drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn resume(&self) {
        self.state.lock().unwrap().refusing = false;
    }
}
