//! The dashboard (`/ui/`) in a real browser: headless Chromium driven over the DevTools
//! protocol by `tests/ui/drive.py` (Debian's `chromium` and `python3-websocket`). Two servers
//! run in-process: an open one, and one with `--auth` where the page must ask for a token.
//! The script leaves a screenshot in `target/tmp/ui-dashboard.png`.
//!
//! Skipped with a line on stderr when Chromium or the Python module is missing, except under
//! CI (`CI` set), where that fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use reg::server::auth::{hash_token, Auth};
use reg::server::Server;
use reg::{Json, Registry};

fn tools() -> Option<&'static str> {
    let chromium = ["chromium", "chromium-browser"].into_iter().any(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    });
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import websocket"])
            .output()
            .is_ok_and(|output| output.status.success())
    });
    python.filter(|_| chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let Some(python) = tokio::task::spawn_blocking(tools).await.unwrap() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and python3-websocket are required under CI"
        );
        eprintln!("skipped: needs chromium and python3-websocket (apt-get install chromium python3-websocket)");
        return;
    };
    let open = common::start(Registry::new()).await;
    let secured_registry = Registry::new();
    secured_registry
        .set("secret.x", Json::from(1_i64), None, None)
        .unwrap();
    let auth = Auth::from_toml(&format!(
        "[[principal]]\nname = \"operator\"\ntoken = \"{}\"\nrules = [{{ names = \"*\", rights = [\"admin\"] }}]\n",
        hash_token("operator-token")
    ))
    .unwrap();
    let secured = Server::builder()
        .registry(secured_registry)
        .auth(auth)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/ui/drive.py");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-dashboard.png");
    let (base, auth_base) = (
        format!("http://{}", open.local_addr()),
        format!("http://{}", secured.local_addr()),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, &auth_base, "operator-token"])
            .arg(&shot)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "drive.py failed: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok:")).count(),
        16,
        "{stdout}"
    );
    open.shutdown_and_wait().await.unwrap();
    secured.shutdown_and_wait().await.unwrap();
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_unless_turned_off() {
    let on = common::start(Registry::new()).await;
    let page = common::get(on.local_addr(), "/ui/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>reg</title>"));
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let script = common::get(on.local_addr(), "/ui/app.js").await;
    assert_eq!(script.status, 200);
    let redirect = common::get(on.local_addr(), "/ui").await;
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (308, Some("/ui/"))
    );
    on.shutdown_and_wait().await.unwrap();

    let config = reg::server::ServerConfig {
        ui: false,
        ..reg::server::ServerConfig::default()
    };
    let off = common::start_with(Registry::new(), config).await;
    let page = common::get(off.local_addr(), "/ui/").await;
    assert_eq!(page.status, 404, "{}", page.text());
    off.shutdown_and_wait().await.unwrap();
}
