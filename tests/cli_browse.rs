//! `reg browse` in a real pseudo-terminal: tmux runs it, the test types keys with
//! `send-keys` and reads the screen with `capture-pane`, against our server on 127.0.0.1:0,
//! a port that refuses connections, and a Part-A fake without the watch stream. (The drawing
//! itself is unit-tested with ratatui's `TestBackend` in `src/bin/reg/browse/ui.rs`.)
//!
//! Needs `tmux`; without it the tests say so and pass without running.
#![allow(clippy::unwrap_used)]

mod cli_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli_support::{json, TestServer, STEP};
use reg::discovery::{Discovery, Instance, Status};
use reg::server::{RunningServer, Server};
use reg::Selector;

/// A tmux server of our own (its own socket, no config), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn tmux(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `command` in a new session of `width` x `height` on a tmux server of its own
    /// (tests run in parallel).
    fn start(command: &str, width: u16, height: u16) -> Self {
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let tmux = Tmux {
            socket: format!(
                "reg-cli-browse-{}-{}",
                std::process::id(),
                SESSIONS.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let (width, height) = (width.to_string(), height.to_string());
        tmux.tmux(&[
            "new-session",
            "-d",
            "-s",
            "browse",
            "-x",
            &width,
            "-y",
            &height,
            command,
        ]);
        tmux
    }

    /// The screen as text; with `colors`, with its escape sequences.
    fn screen(&self, colors: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "browse"];
        if colors {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.tmux(&args).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "browse"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "browse", "-l", text]);
    }

    /// Waits until the screen satisfies `condition`, at most [`STEP`]; returns it.
    fn wait_for(&self, what: &str, colors: bool, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let screen = self.screen(colors);
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The list's part of a line (the left 60% of 120 columns), where rows are.
fn list_part(line: &str) -> String {
    line.chars().take(72).collect()
}

fn list_contains(screen: &str, text: &str) -> bool {
    screen.lines().any(|line| list_part(line).contains(text))
}

/// The list row that shows `name`, if any.
fn list_row(screen: &str, name: &str) -> Option<String> {
    screen
        .lines()
        .map(list_part)
        .find(|line| line.contains(name))
}

/// The status area: the lines between the list's bottom border and the key help (the last
/// non-empty line), trimmed and joined with spaces, so wrapped text reads as one.
fn status_text(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    let footer = lines
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .unwrap_or(0);
    let border = lines[..footer]
        .iter()
        .rposition(|line| line.starts_with('└'))
        .map_or(0, |at| at + 1);
    lines[border..footer]
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `reg browse` against `url`, in a shell that says how it exited and then stays.
fn browse_command(url: &str) -> String {
    browse_command_with(url, "")
}

/// [`browse_command`] with `flags` after `browse`.
fn browse_command_with(url: &str, flags: &str) -> String {
    format!(
        "REGISTRY={url} {} browse {flags}; echo \"browse exited $?\"; sleep 60",
        env!("CARGO_BIN_EXE_reg")
    )
}

#[test]
fn browse_in_a_real_terminal_views_filters_edits_and_quits() {
    if !Tmux::available() {
        eprintln!("SKIPPED browse_in_a_real_terminal: tmux is not installed");
        return;
    }
    let server = TestServer::start();
    let minute = Some(Duration::from_secs(60));
    server
        .registry
        .set("room.lamp", json("true"), None, minute)
        .unwrap();
    server
        .registry
        .set(
            "room.temp",
            json("21.50"),
            Some(json(r#"{"unit":"C"}"#)),
            minute,
        )
        .unwrap();
    server
        .registry
        .set("door", json(r#""open""#), None, minute)
        .unwrap();

    let tmux = Tmux::start(&browse_command(&server.url), 120, 30);
    tmux.wait_for("the flat list", false, |s| {
        list_contains(s, "room.lamp")
            && status_text(s).starts_with("● live")
            && s.contains("3 registers · flat")
    });

    // Tree view.
    tmux.keys(&["t"]);
    tmux.wait_for("the tree view", false, |s| {
        list_contains(s, "▾ room") && list_contains(s, "  lamp") && s.contains("· tree")
    });

    // Type to filter, then clear it.
    tmux.keys(&["/"]);
    tmux.type_text("tem");
    tmux.wait_for("the filtered list", false, |s| {
        s.contains("filter: tem") && list_contains(s, "temp") && !list_contains(s, "door")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", false, |s| {
        list_contains(s, "door") && s.contains("q  quit")
    });

    // A register that is deleted turns red and says so, then leaves.
    server.registry.remove("door");
    // Red is colour 1: SGR 31, or 38;5;1 as tmux writes it back.
    tmux.wait_for("door in red", true, |s| {
        s.lines().any(|line| {
            line.contains("door") && (line.contains("\u{1b}[31m") || line.contains("[38;5;1m"))
        })
    });
    tmux.wait_for("door deleted", false, |s| {
        list_row(s, "door").is_some_and(|row| row.contains("deleted"))
    });
    tmux.wait_for("door gone", false, |s| !list_contains(s, "door"));

    // A register whose TTL runs out says expired. It is on screen before it gets the short
    // TTL, so it is seen whichever read or event comes first.
    server
        .registry
        .set("blink", json("1"), None, minute)
        .unwrap();
    tmux.wait_for("blink listed", false, |s| {
        list_row(s, "blink").is_some_and(|row| row.contains('1'))
    });
    server
        .registry
        .set("blink", json("2"), None, Some(Duration::from_millis(50)))
        .unwrap();
    tmux.wait_for("blink expired", false, |s| {
        list_row(s, "blink").is_some_and(|row| row.contains("expired"))
    });
    tmux.wait_for("blink gone", false, |s| !list_contains(s, "blink"));

    // Edit room.lamp: a change request reaches the registry.
    tmux.keys(&["/"]);
    tmux.type_text("lamp");
    tmux.wait_for("lamp filtered", false, |s| s.contains("filter: lamp"));
    tmux.keys(&["Enter"]);
    tmux.keys(&["G"]);
    tmux.wait_for("lamp selected", false, |s| s.contains("room.lamp"));
    tmux.keys(&["e"]);
    tmux.wait_for("the editor", false, |s| {
        s.contains("new value for room.lamp: true")
    });
    tmux.keys(&["C-u"]);
    tmux.type_text("false");
    tmux.wait_for("the new value typed", false, |s| {
        s.contains("new value for room.lamp: false")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the request sent", false, |s| {
        s.contains("asked for false; waiting for the provider")
    });
    let requests = server
        .registry
        .try_take_requests(&Selector::names(["room.lamp"]));
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].value, json("false"));

    // q quits with status 0 and gives the terminal back (the browser's screen is gone).
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("browse to exit", false, |s| s.contains("browse exited"));
    assert!(screen.contains("browse exited 0"), "{screen}");
    assert!(!screen.contains("● live"), "{screen}");
}

#[test]
fn browse_services_shows_each_service_with_its_instances() {
    if !Tmux::available() {
        eprintln!("SKIPPED browse_services_shows_each_service_with_its_instances: no tmux");
        return;
    }
    let server = TestServer::start();
    let minute = Some(Duration::from_secs(60));
    let discovery = Discovery::new(&server.registry);
    let web1 = Instance::new("web", "web-1")
        .address("10.0.0.5")
        .port(8080)
        .version("1.4.2")
        .tag("primary");
    let web2 = Instance::new("web", "web-2")
        .address("10.0.0.6")
        .port(8080)
        .status(Status::Critical);
    discovery.register(&web1, minute).unwrap();
    discovery.register(&web2, minute).unwrap();
    server
        .registry
        .set("door", json(r#""open""#), None, minute)
        .unwrap();

    let tmux = Tmux::start(&browse_command_with(&server.url, "--services"), 120, 30);
    let screen = tmux.wait_for("the services view", false, |s| {
        status_text(s).starts_with("● live")
            && s.contains("· services ·")
            && list_row(s, "▾ web").is_some_and(|row| row.contains("2 instances, 1 passing"))
            && list_row(s, "web-1").is_some_and(|row| row.contains("10.0.0.5:8080"))
            && list_row(s, "web-2").is_some_and(|row| row.contains("critical"))
    });
    assert!(!list_contains(&screen, "door"), "{screen}");
    // The critical status in red (the only red on a live row): colour 1, SGR 31 or 38;5;1
    // as tmux writes it back.
    tmux.wait_for("web-2 critical in red", true, |s| {
        s.lines().any(|line| {
            line.contains("web-2") && (line.contains("\u{1b}[31m") || line.contains("[38;5;1m"))
        })
    });

    // `s` goes to the flat view, where every register is.
    tmux.keys(&["s"]);
    tmux.wait_for("the flat view", false, |s| {
        s.contains("3 registers · flat") && list_contains(s, "svc/web/web-2")
    });

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("browse to exit", false, |s| s.contains("browse exited"));
    assert!(screen.contains("browse exited 0"), "{screen}");
}

/// A port on 127.0.0.1 that is bound but not listening, so connecting is refused at once,
/// until [`serve_on`] starts our server on it: no other process can take it in between.
fn refusing_port() -> socket2::Socket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket
}

/// Our server, with an empty registry, on `socket` from [`refusing_port`].
fn serve_on(socket: socket2::Socket) -> (tokio::runtime::Runtime, RunningServer) {
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from(socket);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        Server::builder().serve(listener).unwrap()
    });
    (runtime, server)
}

#[test]
fn browse_an_unreachable_server_says_so_whole_at_80_columns_then_goes_live() {
    if !Tmux::available() {
        eprintln!("SKIPPED browse_an_unreachable_server: tmux is not installed");
        return;
    }
    let socket = refusing_port();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let url = format!("http://{addr}");
    let tmux = Tmux::start(&browse_command(&url), 80, 24);
    let screen = tmux.wait_for("unreachable", false, |s| {
        status_text(s).starts_with("✗ unreachable (attempt 2)")
    });
    // The whole error, wrapped in the status area rather than cut off.
    let status = status_text(&screen);
    assert!(
        status.contains(&format!("cannot connect to {url}")),
        "{screen}"
    );
    assert!(
        status.ends_with("Connection refused (os error 111)"),
        "{screen}"
    );
    assert!(screen.contains(&format!("cannot reach {url}")), "{screen}");
    assert!(!screen.contains("no registers"), "{screen}");

    // The server comes up on that port: live, and an empty registry is `no registers`.
    let (_runtime, _server) = serve_on(socket);
    let screen = tmux.wait_for("live", false, |s| {
        status_text(s) == format!("● live · {url}")
    });
    assert!(screen.contains("no registers"), "{screen}");
    assert!(!screen.contains("unreachable"), "{screen}");
}

/// A Part-A server: `GET /consumer` answers `door` while `door` is set (no `X-Reg-Index`,
/// `detail` ignored, a poll with `wait` held 100 ms), `/v1/watch` is a 404. One thread per
/// connection; the threads end with the process.
fn part_a_fake(door: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let door = Arc::clone(&door);
            std::thread::spawn(move || part_a_connection(stream, &door));
        }
    });
    url
}

fn part_a_connection(stream: TcpStream, door: &AtomicBool) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        // The request line, then headers up to the blank line (GETs carry no body).
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
        }
        let (status, body) = if request.starts_with("GET /consumer") {
            if request.contains("wait=") {
                std::thread::sleep(Duration::from_millis(100));
            }
            // Ordering: a flag the test flips, read on the next request; nothing else hangs
            // on it.
            if door.load(Ordering::Relaxed) {
                ("200 OK", r#"{"registers":{"door":{"value":"open"}}}"#)
            } else {
                ("200 OK", r#"{"registers":{}}"#)
            }
        } else {
            ("404 Not Found", r#"{"error":"not found"}"#)
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn browse_against_a_server_without_the_watch_stream_says_gone() {
    if !Tmux::available() {
        eprintln!("SKIPPED browse_against_a_server_without_the_watch_stream: no tmux");
        return;
    }
    let door = Arc::new(AtomicBool::new(true));
    let url = part_a_fake(Arc::clone(&door));
    let tmux = Tmux::start(&browse_command(&url), 120, 30);
    tmux.wait_for("live, without the watch stream", false, |s| {
        list_row(s, "door").is_some_and(|row| row.contains("\"open\""))
            && status_text(s)
                == format!("● live · {url} · no watch stream at this server: removals show as gone")
    });
    door.store(false, Ordering::Relaxed);
    let screen = tmux.wait_for("door gone", false, |s| {
        list_row(s, "door").is_some_and(|row| row.contains("gone"))
    });
    assert!(
        !screen.contains("deleted") && !screen.contains("expired"),
        "{screen}"
    );
}
