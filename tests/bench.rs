//! Each `reg bench` scenario runs briefly against an in-process server and reports: that it
//! runs and what it reports, never how fast.
#![cfg(feature = "bench")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reg::bench::{
    run, CommandsOptions, Common, DiscoveryOptions, FanoutOptions, FleetOptions, Report, Scenario,
    Target, ThroughputOptions,
};

fn small_discovery() -> DiscoveryOptions {
    DiscoveryOptions {
        instances: 40,
        services: 4,
        watchers: 8,
        changes: 8,
    }
}

fn brief() -> Common {
    Common {
        target: Target::InProcess,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        ..Common::default()
    }
}

fn small() -> ThroughputOptions {
    ThroughputOptions {
        connections: 4,
        registers: 20,
        ..ThroughputOptions::default()
    }
}

async fn bench(scenario: Scenario) -> Report {
    let report = run(&scenario, &brief(), false).await.unwrap();
    assert_eq!(report.scenario, scenario.name());
    assert!(!report.rows.is_empty());
    assert!(report.table().contains(scenario.name()));
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["scenario"], scenario.name());
    assert!(report.html().starts_with("<!doctype html>"));
    report
}

fn measured(report: &Report, row: usize) -> bool {
    let row = &report.rows[row];
    row.errors == 0
        && row.throughput.is_some_and(|t| t > 0.0)
        && row.latency.as_ref().is_some_and(|l| l.count > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_reports_reg_beside_the_ceiling() {
    let report = bench(Scenario::Read(small())).await;
    assert!(measured(&report, 0), "{}", report.table());
    assert!(report.rows[0].ratio().is_some_and(|r| r > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_reports_changes_and_refreshes() {
    let report = bench(Scenario::Write(small())).await;
    assert_eq!(report.rows.len(), 2);
    assert!(
        measured(&report, 0) && measured(&report, 1),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_is_honoured() {
    let options = ThroughputOptions {
        rate: Some(200.0),
        ..small()
    };
    let report = bench(Scenario::Read(options)).await;
    // 200/s for 0.4 s: about 80 requests; never the thousands a closed loop would send.
    let count = report.rows[0].latency.as_ref().unwrap().count;
    assert!(
        (40..=120).contains(&count),
        "{count} requests at 200/s for 0.4 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_answers_every_parked_poll() {
    let report = bench(Scenario::Fanout(FanoutOptions {
        polls: 50,
        connections: 2,
        ceiling_command: None,
    }))
    .await;
    let fan = &report.rows[0];
    assert_eq!(fan.errors, 0, "{}", report.table());
    assert_eq!(
        fan.latency.as_ref().unwrap().count,
        50,
        "every poll answered"
    );
    assert!(
        measured(&report, 1) && measured(&report, 2),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_complete_round_trips() {
    let report = bench(Scenario::Commands(CommandsOptions {
        providers: 4,
        drivers: 2,
    }))
    .await;
    assert!(measured(&report, 0), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_refreshes_and_delivers_updates() {
    let report = bench(Scenario::Fleet(FleetOptions {
        devices: 20,
        registers_per_device: 3,
        ttl: Duration::from_millis(200),
        consumers: 4,
        device_connections: 2,
        change_ratio: 1.0,
    }))
    .await;
    assert!(measured(&report, 0), "{}", report.table());
    assert!(
        report.rows[1].latency.as_ref().is_some_and(|l| l.count > 0),
        "consumers saw updates: {}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_wakes_every_watcher_and_times_picks() {
    let report = bench(Scenario::Discovery(small_discovery())).await;
    let table = report.table();
    // Every change answered both services' watchers (2 each), on both routes.
    for row in &report.rows[..2] {
        assert_eq!(row.errors, 0, "{table}");
        assert_eq!(row.latency.as_ref().map(|l| l.count), Some(16), "{table}");
    }
    let picks = &report.rows[3];
    assert!(
        picks
            .figures
            .iter()
            .any(|(name, ns, _)| name.contains("Pick::default") && *ns > 0.0),
        "{table}"
    );
    assert!(
        report.rows[2]
            .figures
            .iter()
            .any(|(name, _, _)| name.contains("per instance")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_runs_alone() {
    let report = bench(Scenario::Ceiling(small())).await;
    assert!(report.rows[0].ceiling_throughput.is_some_and(|t| t > 0.0));
}

#[tokio::test]
async fn a_bad_url_is_a_clear_error() {
    let common = Common {
        target: Target::Url("ftp://nowhere".into()),
        ..brief()
    };
    let error = run(&Scenario::Read(small()), &common, false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("only http://"), "{error}");
}

/// A reg server of the test's own, at a URL, as a user's real server would be.
async fn real_server() -> (reg::server::RunningServer, Common) {
    let server = reg::server::Server::builder()
        .registry(reg::Registry::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let common = Common {
        target: Target::Url(format!("http://{}", server.local_addr())),
        ..brief()
    };
    (server, common)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_a_url_leaves_nothing_behind() {
    let scenarios = [
        Scenario::Read(small()),
        Scenario::Write(small()),
        Scenario::Commands(CommandsOptions {
            providers: 4,
            drivers: 2,
        }),
        Scenario::Fanout(FanoutOptions {
            polls: 20,
            connections: 2,
            ceiling_command: None,
        }),
        Scenario::Fleet(FleetOptions {
            devices: 20,
            registers_per_device: 3,
            ttl: Duration::from_secs(4),
            consumers: 4,
            device_connections: 2,
            change_ratio: 1.0,
        }),
        Scenario::Discovery(small_discovery()),
    ];
    for scenario in scenarios {
        let (server, common) = real_server().await;
        // Someone's own register, which the bench must not touch.
        server
            .registry()
            .set(
                "kitchen.temp",
                reg::Json::from(21_i64),
                None,
                Some(Duration::from_secs(600)),
            )
            .unwrap();
        let report = run(&scenario, &common, false).await.unwrap();
        assert!(
            report.rows.iter().all(|r| r.errors == 0),
            "{}",
            report.table()
        );
        let left = server.registry().len();
        assert_eq!(left, 1, "{}: {left} registers left", scenario.name());
        assert!(server.registry().get("kitchen.temp").is_some());
        server.shutdown_and_wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_runs_report_each_run() {
    let common = Common { runs: 3, ..brief() };
    let report = run(&Scenario::Read(small()), &common, false).await.unwrap();
    assert_eq!(report.runs, 3);
    let row = &report.rows[0];
    assert_eq!(row.runs.len(), 3, "{}", report.table());
    assert!(row
        .runs
        .iter()
        .all(|r| r.throughput.is_some_and(|t| t > 0.0)
            && r.ceiling_throughput.is_some_and(|t| t > 0.0)));
    let shown = row.throughput.unwrap();
    assert!(
        row.runs.iter().any(|r| r.throughput == Some(shown)),
        "the median run is one of them"
    );
    assert!(
        report.table().contains("  runs: ops/s "),
        "{}",
        report.table()
    );
    let timeline = row.timeline.as_ref().unwrap();
    assert!(!timeline.reg.is_empty() && !timeline.ceiling.is_empty());
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["rows"][0]["runs"].as_array().unwrap().len(), 3);
    assert!(json["warnings"].is_array());
}
