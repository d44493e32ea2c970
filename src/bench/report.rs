//! What a benchmark run reports: a summary table for people, JSON for machines, and an HTML
//! page with latency-percentile plots.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// The percentile curve for plots: (percentile, ms), percentile from 0 to 100.
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    /// From a histogram of microseconds.
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ]
        .iter()
        .map(|&p| (p, ms(histogram.value_at_percentile(p))))
        .collect();
        Some(Latency {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
            curve,
        })
    }
}

/// One line of results: a measurement of reg, and where there is one, the same load against
/// the ceiling server in the same run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Operations per second against reg.
    pub throughput: Option<f64>,
    /// Operations per second against the ceiling server, same load, same run.
    pub ceiling_throughput: Option<f64>,
    /// Latency against reg.
    pub latency: Option<Latency>,
    /// Latency against the ceiling server.
    pub ceiling_latency: Option<Latency>,
    /// Requests that failed (connection errors or unexpected status).
    pub errors: u64,
    /// Other figures: (name, value, unit).
    pub figures: Vec<(String, f64, String)>,
}

impl Row {
    pub(crate) fn named(name: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            ..Row::default()
        }
    }

    /// reg's throughput as a fraction of the ceiling's.
    pub fn ratio(&self) -> Option<f64> {
        match (self.throughput, self.ceiling_throughput) {
            (Some(reg), Some(ceiling)) if ceiling > 0.0 => Some(reg / ceiling),
            _ => None,
        }
    }

    pub(crate) fn figure(mut self, name: &str, value: f64, unit: &str) -> Row {
        self.figures.push((name.into(), value, unit.into()));
        self
    }
}

/// The machine a run came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// CPU model name, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in bytes, from /proc/meminfo.
    pub memory_bytes: u64,
}

impl Machine {
    pub(crate) fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |m| m.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory_bytes,
        }
    }
}

/// A benchmark run's results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// What was measured: `in-process` or the URL.
    pub target: String,
    /// Where it ran.
    pub machine: Machine,
    /// The parameters, as given or defaulted.
    pub parameters: Vec<(String, String)>,
    /// The results.
    pub rows: Vec<Row>,
    /// Caveats worth reading beside the figures.
    pub notes: Vec<String>,
}

fn num(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), num)
}

impl Report {
    /// A plain-text summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "reg bench {} — {} — {} CPUs ({}), {:.1} GiB",
            self.scenario,
            self.target,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_bytes as f64 / (1u64 << 30) as f64
        );
        let params: Vec<String> = self
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "parameters: {}", params.join(" "));
        let _ = writeln!(
            out,
            "{:<44} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "measurement",
            "ops/s",
            "ceiling/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors"
        );
        for row in &self.rows {
            let latency = row.latency.as_ref();
            let _ = writeln!(
                out,
                "{:<44} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7}",
                row.name,
                opt(row.throughput),
                opt(row.ceiling_throughput),
                row.ratio()
                    .map_or_else(|| "-".into(), |r| format!("{:.0}%", r * 100.0)),
                opt(latency.map(|l| l.p50_ms)),
                opt(latency.map(|l| l.p99_ms)),
                opt(latency.map(|l| l.p999_ms)),
                opt(latency.map(|l| l.max_ms)),
                row.errors,
            );
            if let Some(ceiling) = &row.ceiling_latency {
                let _ = writeln!(
                    out,
                    "{:<44} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9}",
                    "  (ceiling latency)",
                    "",
                    "",
                    "",
                    num(ceiling.p50_ms),
                    num(ceiling.p99_ms),
                    num(ceiling.p999_ms),
                    num(ceiling.max_ms),
                );
            }
            for (name, value, unit) in &row.figures {
                let _ = writeln!(out, "  {name}: {} {unit}", num(*value));
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A self-contained HTML page: the table and a latency-percentile plot per measurement.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>reg bench</title>\
             <style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}\
             svg{border:1px solid #ddd;margin:.5em 0}</style></head><body>",
        );
        let _ = write!(
            out,
            "<h1>reg bench {}</h1><pre>{}</pre>",
            escape(&self.scenario),
            escape(&self.table())
        );
        for row in &self.rows {
            if let Some(latency) = &row.latency {
                let _ = write!(out, "<h2>{}</h2>", escape(&row.name));
                out.push_str(&plot(latency, row.ceiling_latency.as_ref()));
            }
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG plot of latency against percentile, x on the usual "nines" scale
/// (-log10(1 - p/100)), reg in blue and the ceiling in grey.
fn plot(latency: &Latency, ceiling: Option<&Latency>) -> String {
    const W: f64 = 640.0;
    const H: f64 = 320.0;
    const PAD: f64 = 50.0;
    let nines = |p: f64| -((1.0 - p / 100.0).max(1e-4)).log10();
    let max_x = 4.0;
    let max_y = latency
        .curve
        .iter()
        .chain(ceiling.map(|c| c.curve.iter()).into_iter().flatten())
        .map(|&(_, ms)| ms)
        .fold(0.001_f64, f64::max);
    let point = |(p, ms): (f64, f64)| {
        (
            PAD + nines(p) / max_x * (W - 2.0 * PAD),
            H - PAD - ms / max_y * (H - 2.0 * PAD),
        )
    };
    let path = |curve: &[(f64, f64)]| {
        curve
            .iter()
            .map(|&c| {
                let (x, y) = point(c);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\">\
         <line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{}\" stroke=\"black\"/>",
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD
    );
    for (label, p) in [
        ("0%", 0.0),
        ("90%", 90.0),
        ("99%", 99.0),
        ("99.9%", 99.9),
        ("99.99%", 99.99),
    ] {
        let (x, _) = point((p, 0.0));
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            H - PAD + 16.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} ms</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        PAD - 4.0,
        PAD + 4.0,
        num(max_y),
        PAD - 4.0,
        H - PAD
    );
    if let Some(ceiling) = ceiling {
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"2\" points=\"{}\"/>",
            path(&ceiling.curve)
        );
    }
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#1565c0\">reg</text>",
        path(&latency.curve),
        W - PAD - 60.0,
        PAD + 12.0
    );
    if ceiling.is_some() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#999\">ceiling</text>",
            W - PAD - 60.0,
            PAD + 28.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_and_outputs() {
        let mut histogram = crate::bench::load::histogram();
        for us in 1..=1000u64 {
            histogram.record(us * 10).unwrap();
        }
        let latency = Latency::from_histogram(&histogram).unwrap();
        assert!((latency.p50_ms - 5.0).abs() < 0.1, "{}", latency.p50_ms);
        assert!((latency.max_ms - 10.0).abs() < 0.1);
        let report = Report {
            scenario: "read".into(),
            target: "in-process".into(),
            machine: Machine::detect(),
            parameters: vec![("connections".into(), "4".into())],
            rows: vec![Row {
                throughput: Some(900.0),
                ceiling_throughput: Some(1000.0),
                latency: Some(latency),
                ..Row::named("GET /consumer")
            }],
            notes: vec![],
        };
        assert_eq!(report.rows[0].ratio(), Some(0.9));
        assert!(report.table().contains("90%"));
        assert!(report.json().contains("\"p99_ms\""));
        assert!(report.html().contains("<polyline"));
    }
}
