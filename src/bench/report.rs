//! What a benchmark run reports: a summary table for people, JSON for machines, and an HTML
//! page with charts (latency by percentile on the usual "nines" axis, throughput over time),
//! reg beside the ceiling on each.
//!
//! **Noise.** reg's figures only mean something beside the ceiling measured in the same run,
//! and only when the machine held still. With `--runs N` every figure comes from N runs
//! (reg and the ceiling alternating which goes first), the one shown is the median run's, and
//! the spread is printed beside it. [`warnings`] flags what makes a result untrustworthy: a
//! ratio above 100 % (the ceiling was slowed by something else), a ceiling that varied more
//! than [`NOISY`] between runs, and throughput that sagged within a run.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

/// A spread between runs (max − min over the median) above this is flagged as noise.
pub const NOISY: f64 = 0.10;

/// A slot of throughput below this fraction of the run's median is flagged as a stall.
const SAGGED: f64 = 0.5;

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
    /// The percentile curve for plots: (percentile, ms), percentile from 50 to 100 (100 is
    /// the largest sample).
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
            50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
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
    /// Throughput over time, for the run shown.
    pub timeline: Option<Timeline>,
    /// Each run's figures, in the order run (one entry for a single run). The row's own
    /// figures are the median run's.
    pub runs: Vec<RunFigures>,
}

/// Throughput over the measured window, one value per `interval_s` slot.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Timeline {
    /// Seconds per slot.
    pub interval_s: f64,
    /// Operations/s against reg in each slot.
    pub reg: Vec<f64>,
    /// Operations/s against the ceiling in each slot (empty when there is no ceiling).
    pub ceiling: Vec<f64>,
}

/// One run's headline figures for a row.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct RunFigures {
    /// Operations per second against reg.
    pub throughput: Option<f64>,
    /// Operations per second against the ceiling.
    pub ceiling_throughput: Option<f64>,
    /// reg's median latency, ms.
    pub p50_ms: Option<f64>,
    /// reg's 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
}

impl RunFigures {
    fn of(row: &Row) -> RunFigures {
        RunFigures {
            throughput: row.throughput,
            ceiling_throughput: row.ceiling_throughput,
            p50_ms: row.latency.as_ref().map(|l| l.p50_ms),
            p99_ms: row.latency.as_ref().map(|l| l.p99_ms),
        }
    }

    /// reg's throughput as a fraction of the ceiling's in this run.
    pub fn ratio(&self) -> Option<f64> {
        match (self.throughput, self.ceiling_throughput) {
            (Some(reg), Some(ceiling)) if ceiling > 0.0 => Some(reg / ceiling),
            _ => None,
        }
    }
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
    /// How many times the scenario ran.
    pub runs: usize,
    /// Why these figures may not be trustworthy (see [`warnings`]); empty when nothing looked
    /// wrong.
    pub warnings: Vec<String>,
}

fn num(value: f64) -> String {
    // Whole numbers (counts) and large figures without decimals.
    if (value.fract() == 0.0 && value.abs() < 1e15) || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), num)
}

fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

/// (max − min) / median of `values`, or `None` for fewer than two.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.len() < 2 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let median = sorted[sorted.len() / 2];
    (median > 0.0).then(|| ((max - min) / median, min, max))
}

/// `row`'s figures over its runs: `pick` of each run that has one.
fn per_run(row: &Row, pick: impl Fn(&RunFigures) -> Option<f64>) -> Vec<f64> {
    row.runs.iter().filter_map(pick).collect()
}

const COLUMNS: [&str; 8] = [
    "ops/s",
    "ceiling/s",
    "ratio",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "errors",
];
const WIDTHS: [usize; 8] = [11, 11, 7, 9, 9, 9, 9, 7];

/// One table line: the name padded to `name_width`, then the columns right-aligned.
fn line(out: &mut String, name_width: usize, name: &str, cells: [String; 8]) {
    let mut text = format!("{name:<name_width$}");
    for (cell, width) in cells.iter().zip(WIDTHS) {
        let _ = write!(text, " {cell:>width$}");
    }
    out.push_str(text.trim_end());
    out.push('\n');
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
        if self.runs > 1 {
            let _ = writeln!(
                out,
                "runs: {} (reg and the ceiling alternating which goes first); figures from the \
                 median run, spread = (max - min) / median",
                self.runs
            );
        }
        let name_width = self
            .rows
            .iter()
            .map(|row| row.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(44);
        line(
            &mut out,
            name_width,
            "measurement",
            COLUMNS.map(String::from),
        );
        for row in &self.rows {
            let latency = row.latency.as_ref();
            line(
                &mut out,
                name_width,
                &row.name,
                [
                    opt(row.throughput),
                    opt(row.ceiling_throughput),
                    row.ratio().map_or_else(|| "-".into(), percent),
                    opt(latency.map(|l| l.p50_ms)),
                    opt(latency.map(|l| l.p99_ms)),
                    opt(latency.map(|l| l.p999_ms)),
                    opt(latency.map(|l| l.max_ms)),
                    row.errors.to_string(),
                ],
            );
            if let Some(ceiling) = &row.ceiling_latency {
                line(
                    &mut out,
                    name_width,
                    "  (ceiling latency)",
                    [
                        String::new(),
                        String::new(),
                        String::new(),
                        num(ceiling.p50_ms),
                        num(ceiling.p99_ms),
                        num(ceiling.p999_ms),
                        num(ceiling.max_ms),
                        String::new(),
                    ],
                );
            }
            if row.runs.len() > 1 {
                let mut parts = Vec::new();
                for (what, values) in [
                    ("ops/s", per_run(row, |r| r.throughput)),
                    ("ceiling/s", per_run(row, |r| r.ceiling_throughput)),
                    ("p99 ms", per_run(row, |r| r.p99_ms)),
                ] {
                    if let Some((spread, _, _)) = spread(&values) {
                        let each: Vec<String> = values.iter().map(|&v| num(v)).collect();
                        parts.push(format!(
                            "{what} {} (spread {})",
                            each.join(" / "),
                            percent(spread)
                        ));
                    }
                }
                let ratios: Vec<String> = row
                    .runs
                    .iter()
                    .filter_map(RunFigures::ratio)
                    .map(percent)
                    .collect();
                if !ratios.is_empty() {
                    parts.push(format!("ratio {}", ratios.join(" / ")));
                }
                if !parts.is_empty() {
                    let _ = writeln!(out, "  runs: {}", parts.join("; "));
                }
            }
            for (name, value, unit) in &row.figures {
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" {unit}")
                };
                let _ = writeln!(out, "  {name}: {}{unit}", num(*value));
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A self-contained HTML page: the table, the warnings, and per measurement a latency
    /// chart (by percentile) and a throughput-over-time chart, reg beside the ceiling.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>reg bench</title>\
             <style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}\
             .warning{background:#fff3cd;border:1px solid #e0b000;padding:.5em 1em;margin:.5em 0}\
             svg{margin:.5em 1em .5em 0}</style></head><body>",
        );
        let _ = write!(out, "<h1>reg bench {}</h1>", escape(&self.scenario));
        for warning in &self.warnings {
            let _ = write!(out, "<p class=\"warning\">⚠ {}</p>", escape(warning));
        }
        let _ = write!(out, "<pre>{}</pre>", escape(&self.table()));
        for row in &self.rows {
            let percentiles = row
                .latency
                .as_ref()
                .map(|latency| percentile_chart(&row.name, latency, row.ceiling_latency.as_ref()));
            let timeline = row
                .timeline
                .as_ref()
                .filter(|t| !t.reg.is_empty() || !t.ceiling.is_empty())
                .map(|t| timeline_chart(&row.name, t));
            if percentiles.is_none() && timeline.is_none() {
                continue;
            }
            let _ = write!(out, "<h2>{}</h2><div>", escape(&row.name));
            for chart in [percentiles, timeline].into_iter().flatten() {
                out.push_str(&chart);
            }
            out.push_str("</div>");
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// Rows of several runs of one scenario → one row per measurement: the median run's figures
/// (by reg/ceiling ratio, else throughput, else median latency), every run's in
/// [`Row::runs`], errors summed. A single run's rows come back with one entry each.
pub(crate) fn merge(runs: Vec<Vec<Row>>) -> Vec<Row> {
    let count = runs.iter().map(Vec::len).max().unwrap_or(0);
    let mut columns: Vec<Vec<Row>> = (0..count).map(|_| Vec::new()).collect();
    for rows in runs {
        for (column, row) in columns.iter_mut().zip(rows) {
            column.push(row);
        }
    }
    columns
        .into_iter()
        .filter_map(|mut column| {
            let figures: Vec<RunFigures> = column.iter().map(RunFigures::of).collect();
            let errors = column.iter().map(|row| row.errors).sum();
            let key = |f: &RunFigures| f.ratio().or(f.throughput).or(f.p50_ms).unwrap_or(0.0);
            let mut order: Vec<usize> = (0..column.len()).collect();
            order.sort_by(|&a, &b| key(&figures[a]).total_cmp(&key(&figures[b])));
            let median = *order.get(order.len().saturating_sub(1) / 2)?;
            let mut row = column.swap_remove(median);
            row.runs = figures;
            row.errors = errors;
            Some(row)
        })
        .collect()
}

/// What makes these rows' figures untrustworthy, one sentence each (see the module docs).
pub(crate) fn warnings(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        let name = &row.name;
        let runs = row.runs.len();
        let above: Vec<f64> = row
            .runs
            .iter()
            .filter_map(RunFigures::ratio)
            .filter(|&r| r > 1.0)
            .collect();
        if let Some(highest) = above.iter().copied().reduce(f64::max) {
            out.push(format!(
                "{name}: reg measured {} of the ceiling in {} of {runs} run(s). Above 100% the \
                 ceiling run was slowed by something else on this machine, so the ratio says \
                 nothing about reg: rerun on a quieter machine, with --runs 5",
                percent(highest),
                above.len()
            ));
        }
        for (what, values) in [
            ("the ceiling itself", per_run(row, |r| r.ceiling_throughput)),
            ("reg's throughput", per_run(row, |r| r.throughput)),
        ] {
            if let Some((spread, min, max)) = spread(&values).filter(|s| s.0 > NOISY) {
                out.push(format!(
                    "{name}: {what} varied {} over {} runs ({}-{} ops/s): this machine is \
                     noisy, and differences smaller than that are noise",
                    percent(spread),
                    values.len(),
                    num(min),
                    num(max)
                ));
            }
        }
        if let Some(timeline) = &row.timeline {
            for (what, rates) in [("reg", &timeline.reg), ("the ceiling", &timeline.ceiling)] {
                if let Some(low) = sagged(rates) {
                    out.push(format!(
                        "{name}: throughput against {what} was uneven: its slowest {}s ran at \
                         {} of the median, a stall of the machine or the server (see the \
                         throughput chart in the --html report)",
                        num(timeline.interval_s),
                        percent(low)
                    ));
                }
            }
        }
    }
    out
}

/// The slowest slot as a fraction of the median, when below [`SAGGED`]. The last slot is left
/// out (it may be partial), and so is a timeline of fewer than 4 slots.
fn sagged(rates: &[f64]) -> Option<f64> {
    let full = rates.get(..rates.len().saturating_sub(1))?;
    if full.len() < 3 {
        return None;
    }
    let mut sorted = full.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let low = sorted[0] / median;
    (median > 0.0 && low < SAGGED).then_some(low)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// reg's line colour; the ceiling's is grey.
const REG: RGBColor = RGBColor(0x15, 0x65, 0xc0);
const CEILING: RGBColor = RGBColor(0x88, 0x88, 0x88);
const CHART: (u32, u32) = (640, 340);

/// A percentile on the "nines" axis: 90% → 1, 99% → 2, 99.9% → 3 …; the largest sample
/// (100%) sits at [`MAX_NINES`].
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        MAX_NINES
    } else {
        (-(1.0 - percentile / 100.0).log10()).min(MAX_NINES)
    }
}

const MAX_NINES: f64 = 5.0;

/// The percentile axis: linear in nines from 50% to the largest sample, ticks at 50%, 90%,
/// 99%, 99.9%, 99.99% and max (plotters' own f64 axis picks evenly spaced ticks instead).
struct NinesAxis;

impl Ranged for NinesAxis {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;

    fn range(&self) -> std::ops::Range<f64> {
        nines(50.0)..MAX_NINES
    }

    fn map(&self, value: &f64, (from, to): (i32, i32)) -> i32 {
        let range = self.range();
        let fraction = (value - range.start) / (range.end - range.start);
        from + (fraction * f64::from(to - from)).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        vec![nines(50.0), 1.0, 2.0, 3.0, 4.0, MAX_NINES]
    }
}

fn nines_label(x: &f64) -> String {
    match (x * 10.0).round() as i64 {
        3 => "50%".into(),
        10 => "90%".into(),
        20 => "99%".into(),
        30 => "99.9%".into(),
        40 => "99.99%".into(),
        50 => "max".into(),
        _ => String::new(),
    }
}

/// Latency (log ms) by percentile (nines axis), reg and the ceiling, as inline SVG.
fn percentile_chart(name: &str, latency: &Latency, ceiling: Option<&Latency>) -> String {
    let curves: Vec<(&str, RGBColor, &Latency)> = std::iter::once(("reg", REG, latency))
        .chain(ceiling.map(|c| ("ceiling", CEILING, c)))
        .collect();
    let values = curves
        .iter()
        .flat_map(|(_, _, l)| l.curve.iter().map(|&(_, ms)| ms));
    let (low, high) = values.fold((f64::MAX, 0.0_f64), |(lo, hi), ms| (lo.min(ms), hi.max(ms)));
    let low = (low.max(0.001) / 1.5).max(0.0005);
    let high = (high * 1.5).max(low * 10.0);
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{name}: latency by percentile"), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(NinesAxis, (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale: each step is one more nine)")
            .y_desc("latency, ms (log scale)")
            .x_label_formatter(&nines_label)
            .y_label_formatter(&|ms| num(*ms))
            .draw()?;
        for (label, colour, latency) in curves {
            chart
                .draw_series(LineSeries::new(
                    latency.curve.iter().map(|&(p, ms)| (nines(p), ms)),
                    colour.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// Operations/s over the measured window, reg and the ceiling, as inline SVG.
fn timeline_chart(name: &str, timeline: &Timeline) -> String {
    let series: Vec<(&str, RGBColor, &Vec<f64>)> = [
        ("reg", REG, &timeline.reg),
        ("ceiling", CEILING, &timeline.ceiling),
    ]
    .into_iter()
    .filter(|(_, _, rates)| !rates.is_empty())
    .collect();
    let slots = series.iter().map(|(_, _, r)| r.len()).max().unwrap_or(1);
    let seconds = (slots as f64 * timeline.interval_s).max(f64::EPSILON);
    let top = series
        .iter()
        .flat_map(|(_, _, r)| r.iter().copied())
        .fold(1.0_f64, f64::max)
        * 1.15;
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{name}: throughput over time"), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(0.0..seconds, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "seconds into the measured window ({}s slots)",
                num(timeline.interval_s)
            ))
            .y_desc("operations/s")
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        for (label, colour, rates) in series {
            let points = rates
                .iter()
                .enumerate()
                .map(|(i, &rate)| ((i as f64 + 0.5) * timeline.interval_s, rate));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), Box<dyn std::error::Error + 'static>>;

/// Draws into an SVG string; a drawing error becomes a note in the page instead.
fn svg(draw: impl FnOnce(Area<'_>) -> Drawn) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, CHART).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(root.clone()))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => out,
        Err(error) => format!("<p>(chart not drawn: {})</p>", escape(&error.to_string())),
    }
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
            runs: 1,
            warnings: vec![],
        };
        assert_eq!(report.rows[0].ratio(), Some(0.9));
        assert!(report.table().contains("90%"));
        assert!(report.json().contains("\"p99_ms\""));
        assert!(report.html().contains("<polyline"));
    }

    fn row(name: &str, reg: f64, ceiling: f64) -> Row {
        Row {
            throughput: Some(reg),
            ceiling_throughput: Some(ceiling),
            ..Row::named(name)
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        let warnings = warnings(&rows);
        Report {
            scenario: "read".into(),
            target: "in-process".into(),
            machine: Machine::detect(),
            parameters: vec![],
            rows,
            notes: vec![],
            runs: 1,
            warnings,
        }
    }

    #[test]
    fn whole_numbers_print_without_decimals() {
        assert_eq!(num(20.0), "20");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(12.5), "12.50");
        assert_eq!(num(0.25), "0.250");
        assert_eq!(num(12345.6), "12346");
        let table = report(vec![Row::named("fan").figure(
            "parked long polls",
            20.0,
            "",
        )])
        .table();
        assert!(table.contains("  parked long polls: 20\n"), "{table}");
    }

    #[test]
    fn columns_stay_aligned_under_a_long_name() {
        let long = "change request round trip (3 HTTP exchanges + 2 long polls)";
        let mut rows = vec![row("GET /consumer", 1.0, 2.0), row(long, 3.0, 4.0)];
        for row in &mut rows {
            row.errors = 7;
        }
        let table = report(rows).table();
        let header = table
            .lines()
            .find(|l| l.starts_with("measurement"))
            .unwrap();
        for line in table
            .lines()
            .filter(|l| l.starts_with("GET") || l.starts_with("change"))
        {
            assert_eq!(line.chars().count(), header.chars().count(), "{table}");
            assert!(line.ends_with(" 7"), "{line}");
        }
    }

    #[test]
    fn repeated_runs_report_the_median_run_and_every_run() {
        let merged = merge(vec![
            vec![row("r", 50.0, 100.0)],
            vec![row("r", 90.0, 100.0)],
            vec![row("r", 70.0, 100.0)],
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].throughput, Some(70.0), "the median ratio's run");
        let each: Vec<Option<f64>> = merged[0].runs.iter().map(|r| r.throughput).collect();
        assert_eq!(each, [Some(50.0), Some(90.0), Some(70.0)]);
        let table = report(merged).table();
        assert!(table.contains("ops/s 50 / 90 / 70 (spread 57%)"), "{table}");
        assert!(table.contains("ratio 50% / 90% / 70%"), "{table}");
    }

    #[test]
    fn a_steady_run_has_no_warnings() {
        let mut steady = merge(vec![
            vec![row("r", 50.0, 100.0)],
            vec![row("r", 52.0, 104.0)],
        ]);
        steady[0].timeline = Some(Timeline {
            interval_s: 0.25,
            reg: vec![50.0, 52.0, 49.0, 51.0, 20.0],
            ceiling: vec![100.0; 5],
        });
        assert_eq!(warnings(&steady), Vec::<String>::new());
    }

    #[test]
    fn noisy_results_are_flagged() {
        let above = merge(vec![vec![row("hot", 134.0, 100.0)]]);
        let said = warnings(&above);
        assert!(said.len() == 1 && said[0].contains("hot: reg measured 134% of the ceiling"));

        let noisy = merge(vec![
            vec![row("n", 50.0, 100.0)],
            vec![row("n", 50.0, 125.0)],
        ]);
        let said = warnings(&noisy);
        assert!(
            said.iter()
                .any(|w| w.contains("the ceiling itself varied 20% over 2 runs")),
            "{said:?}"
        );

        let mut stalled = merge(vec![vec![row("s", 50.0, 100.0)]]);
        stalled[0].timeline = Some(Timeline {
            interval_s: 0.25,
            reg: vec![100.0, 100.0, 30.0, 100.0, 100.0],
            ceiling: vec![],
        });
        let said = warnings(&stalled);
        assert!(
            said.iter()
                .any(|w| w.contains("against reg was uneven") && w.contains("30%")),
            "{said:?}"
        );
        let table = report(stalled).table();
        assert!(
            table.contains("warning: s: throughput against reg was uneven"),
            "{table}"
        );
    }

    #[test]
    fn html_charts_have_axes_gridlines_and_a_legend() {
        let mut histogram = crate::bench::load::histogram();
        for us in 1..=10_000u64 {
            histogram.record(us).unwrap();
        }
        let latency = Latency::from_histogram(&histogram).unwrap();
        let mut rows = vec![Row {
            latency: Some(latency.clone()),
            ceiling_latency: Some(latency),
            timeline: Some(Timeline {
                interval_s: 0.25,
                reg: vec![10.0, 11.0, 12.0],
                ceiling: vec![20.0, 21.0, 22.0],
            }),
            ..row("GET <x>", 11.0, 21.0)
        }];
        rows.push(Row::named("no latency"));
        let html = report(rows).html();
        for text in [
            "GET &lt;x&gt;: latency by percentile",
            "percentile (log scale",
            "latency, ms (log scale)",
            "throughput over time",
            "operations/s",
            ">\n50%\n<",
            ">\n99.9%\n<",
            ">\n99.99%\n<",
            ">\nmax\n<",
            ">\nreg\n<",
            ">\nceiling\n<",
        ] {
            assert!(html.contains(text), "{text:?} missing");
        }
        assert_eq!(
            html.matches("<svg").count(),
            2,
            "two charts for the one row with data"
        );
        assert!(!html.contains("chart not drawn"));
        assert!(html.matches("<line").count() > 20, "gridlines");
    }
}
