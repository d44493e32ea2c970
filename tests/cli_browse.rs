//! `reg browse` in a real pseudo-terminal: tmux runs it, the test types keys with
//! `send-keys` and reads the screen with `capture-pane`, against our server on 127.0.0.1:0.
//! (The drawing itself is unit-tested with ratatui's `TestBackend` in
//! `src/bin/reg/browse/ui.rs`.)
//!
//! Needs `tmux`; without it the test says so and passes without running.
#![allow(clippy::unwrap_used)]

mod cli_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cli_support::{json, TestServer, STEP};
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

    /// Runs `command` in a new 120x30 session.
    fn start(command: &str) -> Self {
        let tmux = Tmux {
            socket: format!("reg-cli-browse-{}", std::process::id()),
        };
        tmux.tmux(&[
            "new-session",
            "-d",
            "-s",
            "browse",
            "-x",
            "120",
            "-y",
            "30",
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

/// The list's part of a line (the left 60%), where rows are.
fn list_part(line: &str) -> String {
    line.chars().take(72).collect()
}

fn list_contains(screen: &str, text: &str) -> bool {
    screen.lines().any(|line| list_part(line).contains(text))
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

    let command = format!(
        "REGISTRY={} {} browse; echo \"browse exited $?\"; sleep 60",
        server.url,
        env!("CARGO_BIN_EXE_reg")
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the flat list", false, |s| {
        list_contains(s, "room.lamp") && s.contains("● live") && s.contains("3 registers · flat")
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

    // A register that goes away turns red, then leaves.
    server.registry.remove("door");
    // Red is colour 1: SGR 31, or 38;5;1 as tmux writes it back.
    tmux.wait_for("door in red", true, |s| {
        s.lines().any(|line| {
            line.contains("door") && (line.contains("\u{1b}[31m") || line.contains("[38;5;1m"))
        })
    });
    tmux.wait_for("door gone", false, |s| !list_contains(s, "door"));

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
    assert!(!screen.contains("reg browse ·"), "{screen}");
}
