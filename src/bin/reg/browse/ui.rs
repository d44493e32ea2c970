//! Drawing the browser: a pure function of the [`App`] state (tested with ratatui's
//! `TestBackend` below).

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap};
use ratatui::Frame;
use reg::discovery::{Instance, Status as Health};
use reg::json::{parse_tree, Node};
use reg::Json;

use super::app::{
    App, Connection, Entry, Mode, Removal, Row, ServiceRow, ViewMode, Watch, CHANGED_HIGHLIGHT,
};

/// The style of a register that expired or was deleted, and of errors.
pub(crate) const GONE: Style = Style::new().fg(Color::Red);
/// The style of a register whose value just changed.
const CHANGED: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
const KEY: Style = Style::new().add_modifier(Modifier::REVERSED);
const DIM: Style = Style::new().fg(Color::DarkGray);
const LABEL: Style = Style::new().add_modifier(Modifier::BOLD);
const LIVE: Style = Style::new().fg(Color::Green).add_modifier(Modifier::BOLD);
const WARN: Style = Style::new().fg(Color::Yellow);
/// An instance's status: passing, warning, critical.
const PASSING: Style = Style::new().fg(Color::Green);
const WARNING: Style = Style::new().fg(Color::Yellow);
const CRITICAL: Style = Style::new().fg(Color::Red);
/// What the services view says when there is no instance to show.
const NO_SERVICES: &str = "no services (instances are registers under svc/<service>/<id>)";
/// Widest the address and version columns of the services view pad to (a longer one is
/// shown whole, out of line).
const ADDRESS_COLUMN: usize = 28;
const VERSION_COLUMN: usize = 12;
/// Widest the name column of the services view grows (a longer name is cut).
const NAME_COLUMN: usize = 32;
/// Rows the list keeps however tall the status area grows: its borders and one row.
const MIN_LIST_ROWS: u16 = 3;

/// Draws the whole screen. Returns the list's scroll offset, for the next frame (the only
/// state drawing produces).
///
/// Bottom up: the key help (one line), the status area (the connection state and any
/// message, each wrapped whole over as many lines as the width needs), the list and details.
pub(crate) fn render(app: &App, frame: &mut Frame<'_>) -> usize {
    let area = frame.area();
    let width = usize::from(area.width);
    let mut status = connection_lines(app, width);
    let prompt_row = status.len();
    let (message, cursor) = message_lines(app, width);
    status.extend(message);
    let room = area.height.saturating_sub(MIN_LIST_ROWS + 1);
    let height = u16::try_from(status.len()).unwrap_or(u16::MAX).min(room);
    let [main, status_area, footer] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(height),
        Constraint::Length(1),
    ])
    .areas(area);
    let [list, details] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(main);
    let rows = app.rows();
    let offset = render_list(app, &rows, frame, list);
    render_details(app, rows.get(app.cursor), frame, details);
    frame.render_widget(Paragraph::new(status), status_area);
    if let Some(x) = cursor {
        let y = u16::try_from(prompt_row).unwrap_or(u16::MAX);
        if y < status_area.height {
            let x = u16::try_from(x)
                .unwrap_or(u16::MAX)
                .min(status_area.width.saturating_sub(1));
            frame.set_cursor_position((status_area.x + x, status_area.y + y));
        }
    }
    render_footer(app, frame, footer);
    offset
}

/// The connection state, wrapped to `width`: `connecting to …`, `● live · …`,
/// `reconnecting (attempt n): …`, `unreachable (attempt n): …`, and what the watch stream
/// (the kinds of removals) is doing when that is worth saying.
fn connection_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let url = app.url.as_str();
    let mut words: Vec<(String, Style)> = Vec::new();
    match &app.connection {
        Connection::Connecting => {
            words.push(("connecting to".to_owned(), WARN));
            words.push((format!("{url}…"), Style::new()));
        }
        Connection::Live => {
            words.push(("● live".to_owned(), LIVE));
            words.push(("·".to_owned(), DIM));
            words.push((url.to_owned(), Style::new()));
            match &app.watch {
                Watch::Waiting | Watch::Streaming => {}
                Watch::Unsupported => words.push((
                    "· no watch stream at this server: removals show as gone".to_owned(),
                    DIM,
                )),
                Watch::Broken(error) => {
                    words.push(("· watch stream lost, reopening:".to_owned(), WARN));
                    words.push((error.clone(), Style::new()));
                }
            }
        }
        Connection::Failed {
            error,
            attempts,
            was_live,
        } => {
            let (what, style) = if *was_live {
                ("reconnecting", WARN)
            } else {
                ("✗ unreachable", GONE)
            };
            words.push((format!("{what} (attempt {attempts}):"), style));
            words.push((error.clone(), GONE));
        }
    }
    wrap(&words, width)
}

/// The message line(s): the filter or edit prompt, or the last message. Returns them and,
/// while typing, the cursor's column on the first.
fn message_lines(app: &App, width: usize) -> (Vec<Line<'static>>, Option<usize>) {
    match &app.mode {
        Mode::Filter => {
            let line = Line::from(vec![
                Span::styled("filter: ", LABEL),
                Span::raw(app.filter.clone()),
            ]);
            let cursor = line.width();
            (vec![line], Some(cursor))
        }
        Mode::Edit { name, input, error } => {
            let line = Line::from(vec![
                Span::styled(format!("new value for {name}: "), LABEL),
                Span::raw(input.clone()),
            ]);
            let cursor = line.width();
            let mut lines = vec![line];
            if let Some(error) = error {
                lines.extend(wrap(&[(error.clone(), GONE)], width));
            }
            (lines, Some(cursor))
        }
        Mode::Normal => match &app.status {
            Some(status) => {
                let style = if status.error { GONE } else { Style::new() };
                (wrap(&[(status.text.clone(), style)], width), None)
            }
            None if !app.filter.is_empty() => (
                vec![Line::from(vec![
                    Span::styled("filter: ", LABEL),
                    Span::raw(app.filter.clone()),
                ])],
                None,
            ),
            None => (Vec::new(), None),
        },
    }
}

/// Word-wraps styled text to `width` columns: words (split at whitespace) keep their
/// piece's style, lines break between words, and a word longer than a line is broken
/// across lines. Nothing is dropped; at least one line comes back (an empty one for a width
/// of 0, where nothing shows).
fn wrap(pieces: &[(String, Style)], width: usize) -> Vec<Line<'static>> {
    if width == 0 {
        return vec![Line::default()];
    }
    let mut lines = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (text, style) in pieces {
        for word in text.split_whitespace() {
            let word_width = text_width(word);
            if used > 0 && used + 1 + word_width <= width {
                line.push(Span::raw(" "));
                line.push(Span::styled(word.to_owned(), *style));
                used += 1 + word_width;
                continue;
            }
            if used > 0 {
                lines.push(Line::from(std::mem::take(&mut line)));
            }
            let mut rest = word;
            while text_width(rest) > width {
                let (head, tail) = split_at_width(rest, width);
                if tail.is_empty() {
                    break;
                }
                lines.push(Line::from(Span::styled(head.to_owned(), *style)));
                rest = tail;
            }
            line.push(Span::styled(rest.to_owned(), *style));
            used = text_width(rest);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(Line::from(line));
    }
    lines
}

/// Display columns of `text`.
fn text_width(text: &str) -> usize {
    Span::raw(text).width()
}

/// Splits `text` after as many characters as fit in `width` columns (at least one, so a
/// caller that loops always gets on).
fn split_at_width(text: &str, width: usize) -> (&str, &str) {
    let mut used = 0;
    let mut end = 0;
    for (at, c) in text.char_indices() {
        let mut buffer = [0; 4];
        let c_width = text_width(c.encode_utf8(&mut buffer));
        if end > 0 && used + c_width > width {
            break;
        }
        used += c_width;
        end = at + c.len_utf8();
    }
    text.split_at(end)
}

fn render_list(app: &App, rows: &[Row<'_>], frame: &mut Frame<'_>, area: Rect) -> usize {
    let live = app
        .registers
        .values()
        .filter(|e| e.gone_since.is_none())
        .count();
    let live = match live {
        1 => "1 register".to_owned(),
        n => format!("{n} registers"),
    };
    let view = match app.view {
        ViewMode::Flat => "flat",
        ViewMode::Tree => "tree",
        ViewMode::Services => "services",
    };
    // The count and the view first: a narrow title keeps them and loses the URL.
    let title = match &app.connection {
        Connection::Live => Line::from(format!(" {live} · {view} · {} ", app.url)),
        Connection::Connecting => Line::from(vec![
            Span::styled(" connecting", WARN),
            Span::raw(format!(" · {view} · {} ", app.url)),
        ]),
        Connection::Failed { was_live: true, .. } => Line::from(vec![
            Span::styled(" unreachable", GONE),
            Span::raw(format!(" · {live} as last read · {view} · {} ", app.url)),
        ]),
        Connection::Failed {
            was_live: false, ..
        } => Line::from(vec![
            Span::styled(" unreachable", GONE),
            Span::raw(format!(" · {view} · {} ", app.url)),
        ]),
    };
    let block = Block::bordered().title(title);
    if rows.is_empty() {
        let services = app.view == ViewMode::Services;
        let (text, style) = if services && app.any_instance() {
            (format!("no instance matches {:?}", app.filter), DIM)
        } else if services && (!app.registers.is_empty() || app.connection == Connection::Live) {
            (NO_SERVICES.to_owned(), DIM)
        } else if !app.registers.is_empty() {
            (format!("no register matches {:?}", app.filter), DIM)
        } else {
            match app.connection {
                Connection::Live => ("no registers".to_owned(), DIM),
                Connection::Connecting => (format!("connecting to {}…", app.url), WARN),
                Connection::Failed { .. } => (
                    format!("cannot reach {} — see the status below", app.url),
                    GONE,
                ),
            }
        };
        frame.render_widget(
            Paragraph::new(text)
                .style(style)
                .wrap(Wrap { trim: false })
                .block(block),
            area,
        );
        return 0;
    }
    let table = if app.view == ViewMode::Services {
        services_table(app, rows)
    } else {
        names_table(app, rows)
    };
    let table = table
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default()
        .with_offset(app.offset)
        .with_selected(Some(app.cursor));
    frame.render_stateful_widget(table, area, &mut state);
    state.offset()
}

/// What a row's name column shows: its label, indented by its depth, after the fold mark of
/// a group.
fn row_name(row: &Row<'_>) -> String {
    let mut name = "  ".repeat(row.depth);
    if let Some((_, folded)) = row.group {
        name.push_str(if folded { "▸ " } else { "▾ " });
    }
    name.push_str(&row.label);
    name
}

/// The flat and tree views: name and value.
fn names_table<'a>(app: &App, rows: &[Row<'_>]) -> Table<'a> {
    let table_rows = rows.iter().map(|row| {
        let name = row_name(row);
        let value = match (row.entry, row.group) {
            (Some(entry), _) if entry.gone_since.is_some() => removal_word(entry).to_owned(),
            (Some(entry), _) => entry.value.to_string(),
            (None, Some((count, _))) => format!("({count})"),
            (None, None) => String::new(),
        };
        let style = match row.entry {
            Some(entry) => entry_style(app, entry),
            None => DIM,
        };
        TableRow::new([Cell::from(name), Cell::from(value)]).style(style)
    });
    Table::new(
        table_rows,
        [Constraint::Percentage(45), Constraint::Percentage(55)],
    )
    .header(TableRow::new(["NAME", "VALUE"]).style(LABEL))
}

/// The services view: a row per service (`N instances, M passing`), and below it a row per
/// instance: its id, then `address:port`, version and tags lined up in one column, then its
/// status in colour (or how it went, in red, once gone).
fn services_table<'a>(app: &App, rows: &[Row<'_>]) -> Table<'a> {
    let instances = || {
        rows.iter().filter_map(|row| match &row.service {
            Some(ServiceRow::Instance(instance)) => Some(instance.as_ref()),
            _ => None,
        })
    };
    let column = |header: &str, cap: usize, text: fn(&Instance) -> String| {
        instances()
            .map(|instance| text_width(&text(instance)))
            .chain([text_width(header)])
            .max()
            .unwrap_or(0)
            .min(cap)
    };
    let address_width = column("ADDRESS", ADDRESS_COLUMN, address);
    let version_width = column("VERSION", VERSION_COLUMN, version);
    let line = |address: &str, version: &str, tags: &str| {
        format!(
            "{}  {}  {tags}",
            pad(address, address_width),
            pad(version, version_width)
        )
    };
    let names: Vec<String> = rows.iter().map(row_name).collect();
    // As wide as the widest name, up to a limit: the rest is for the instances' columns.
    let name_width = names
        .iter()
        .map(|name| text_width(name))
        .chain([text_width("NAME")])
        .max()
        .unwrap_or(0)
        .min(NAME_COLUMN);
    let table_rows = rows
        .iter()
        .zip(names)
        .map(|(row, name)| match (&row.service, row.entry) {
            (Some(ServiceRow::Instance(instance)), Some(entry)) => {
                let status = if entry.gone_since.is_some() {
                    Cell::from(removal_word(entry)).style(GONE)
                } else {
                    Cell::from(instance.status.as_str()).style(health_style(instance.status))
                };
                let what = line(&address(instance), &version(instance), &tags(instance));
                TableRow::new([Cell::from(name), Cell::from(what), status])
                    .style(entry_style(app, entry))
            }
            (Some(ServiceRow::Service { passing }), _) => {
                let live = row.group.map_or(0, |(live, _)| live);
                let style = if live == 0 { GONE } else { LABEL };
                TableRow::new([
                    Cell::from(name),
                    Cell::from(service_counts(live, *passing)),
                    Cell::from(""),
                ])
                .style(style)
            }
            _ => TableRow::new([Cell::from(name)]).style(DIM),
        });
    Table::new(
        table_rows,
        [
            Constraint::Length(u16::try_from(name_width).unwrap_or(u16::MAX)),
            Constraint::Fill(1),
            Constraint::Length(8),
        ],
    )
    .header(
        TableRow::new([
            Cell::from("NAME"),
            Cell::from(line("ADDRESS", "VERSION", "TAGS")),
            Cell::from("STATUS"),
        ])
        .style(LABEL),
    )
}

/// `2 instances, 1 passing`.
fn service_counts(live: usize, passing: usize) -> String {
    let instances = if live == 1 { "instance" } else { "instances" };
    format!("{live} {instances}, {passing} passing")
}

/// Where an instance serves: `address:port` (`[v6]:port`), the address or `:port` alone,
/// `-` for neither.
fn address(instance: &Instance) -> String {
    match (instance.address.as_str(), instance.port) {
        ("", 0) => "-".to_owned(),
        (address, 0) => address.to_owned(),
        (address, port) if address.contains(':') => format!("[{address}]:{port}"),
        (address, port) => format!("{address}:{port}"),
    }
}

fn version(instance: &Instance) -> String {
    if instance.version.is_empty() {
        "-".to_owned()
    } else {
        instance.version.clone()
    }
}

fn tags(instance: &Instance) -> String {
    if instance.tags.is_empty() {
        "-".to_owned()
    } else {
        instance.tags.join(",")
    }
}

/// `text` padded with spaces to `width` display columns (a wider one as it is).
fn pad(text: &str, width: usize) -> String {
    let mut padded = text.to_owned();
    padded.push_str(&" ".repeat(width.saturating_sub(text_width(text))));
    padded
}

/// The colour of an instance's status: green, yellow, red.
fn health_style(status: Health) -> Style {
    match status {
        Health::Passing => PASSING,
        Health::Warning => WARNING,
        Health::Critical => CRITICAL,
    }
}

/// How a gone register went: `expired` or `deleted` as the watch stream said, `gone` when
/// it did not (a server without the stream, or a removal before it opened).
fn removal_word(entry: &Entry) -> &'static str {
    match entry.removal {
        Some(Removal::Expired) => "expired",
        Some(Removal::Deleted) => "deleted",
        None => "gone",
    }
}

fn entry_style(app: &App, entry: &Entry) -> Style {
    if entry.gone_since.is_some() {
        GONE
    } else if entry
        .changed_at
        .is_some_and(|at| app.now.saturating_duration_since(at) < CHANGED_HIGHLIGHT)
    {
        CHANGED
    } else {
        Style::new()
    }
}

fn render_details(app: &App, row: Option<&Row<'_>>, frame: &mut Frame<'_>, area: Rect) {
    let block = Block::bordered().title(" details ");
    let Some(row) = row else {
        frame.render_widget(Paragraph::new("").block(block), area);
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("name      ", LABEL),
        Span::raw(row.key.clone()),
    ])];
    match row.entry {
        Some(entry) => {
            let state = match entry.gone_since {
                Some(_) => Span::styled(removal_word(entry), GONE),
                None => Span::styled("live", Style::new().fg(Color::Green)),
            };
            lines.push(Line::from(vec![Span::styled("state     ", LABEL), state]));
            let number = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            lines.push(Line::from(vec![
                Span::styled("revision  ", LABEL),
                Span::raw(number(entry.revision)),
                Span::styled("  created ", LABEL),
                Span::raw(number(entry.created)),
            ]));
            let expires = match (entry.gone_since, entry.expires_at) {
                (Some(_), _) => "-".to_owned(),
                (None, Some(at)) => seconds(at.saturating_duration_since(app.now)),
                (None, None) => "-".to_owned(),
            };
            lines.push(Line::from(vec![
                Span::styled("expires in ", LABEL),
                Span::raw(expires),
            ]));
            lines.push(Line::styled("metadata", LABEL));
            let metadata = entry
                .metadata
                .as_ref()
                .map_or_else(|| "{}".to_owned(), pretty);
            lines.extend(metadata.lines().map(|l| Line::raw(format!("  {l}"))));
            lines.push(Line::styled("value", LABEL));
            lines.extend(
                pretty(&entry.value)
                    .lines()
                    .map(|l| Line::raw(format!("  {l}"))),
            );
        }
        None => {
            let count = row.group.map_or(0, |(count, _)| count);
            match &row.service {
                Some(ServiceRow::Service { passing }) => lines.push(Line::raw(format!(
                    "service {}: {}",
                    row.label,
                    service_counts(count, *passing)
                ))),
                _ => lines.push(Line::raw(format!("group: {count} registers below"))),
            }
            lines.push(Line::styled("space or enter: fold/unfold", DIM));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn render_footer(app: &App, frame: &mut Frame<'_>, area: Rect) {
    // Short words: the whole line fits in 80 columns.
    let views: &[(&str, &str)] = match (app.view, app.names_view) {
        (ViewMode::Flat, _) => &[("t", "tree"), ("s", "services")],
        (ViewMode::Tree, _) => &[("t", "flat"), ("s", "services")],
        // `s` (or `t`) goes back to the names view it came from.
        (ViewMode::Services, ViewMode::Tree) => &[("s", "tree")],
        (ViewMode::Services, _) => &[("s", "flat")],
    };
    let normal: Vec<(&str, &str)> = [("q", "quit"), ("/", "filter")]
        .into_iter()
        .chain(views.iter().copied())
        .chain([("e", "edit"), ("↑↓", "move"), ("←→", "fold")])
        .collect();
    let keys: &[(&str, &str)] = match app.mode {
        Mode::Normal => &normal,
        Mode::Filter => &[
            ("type", "filter"),
            ("enter", "keep"),
            ("esc", "clear"),
            ("↑↓", "move"),
        ],
        Mode::Edit { .. } => &[
            ("type", "JSON"),
            ("enter", "send change request"),
            ("esc", "cancel"),
            ("ctrl-u", "clear"),
        ],
    };
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::styled(format!(" {key} "), KEY));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A remaining time in seconds with one decimal: `4.2s`.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// A JSON value indented two spaces per level, numbers and strings exactly as stored.
pub(crate) fn pretty(json: &Json) -> String {
    match parse_tree(json.as_bytes()) {
        Ok(node) => {
            let mut out = String::new();
            write_pretty(&node, 0, &mut out);
            out
        }
        Err(_) => json.to_string(),
    }
}

fn write_pretty(node: &Node<'_>, indent: usize, out: &mut String) {
    let pad = |out: &mut String, level: usize| out.push_str(&"  ".repeat(level));
    match node {
        Node::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, indent + 1);
                write_pretty(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Node::Object(members) if !members.is_empty() => {
            out.push_str("{\n");
            for (i, (key, value)) in members.iter().enumerate() {
                pad(out, indent + 1);
                key.write_canonical(out);
                out.push_str(": ");
                write_pretty(value, indent + 1, out);
                out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
        other => other.write_canonical(out),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use tokio::time::Instant;

    use super::super::app::{Action, Read, Removal, Watch, GONE_LINGER};
    use super::*;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    fn read(name: &str, value: &str) -> Read {
        Read {
            name: name.to_owned(),
            value: json(value),
            metadata: None,
            revision: Some(1),
            created: Some(1),
            expires_in: Some(Duration::from_secs(5)),
        }
    }

    fn app(now: Instant) -> App {
        let mut app = App::new("http://reg.test".to_owned(), now);
        app.apply_snapshot(
            vec![
                read("kitchen.lamp", "true"),
                Read {
                    metadata: Some(json(r#"{"unit":"C"}"#)),
                    revision: Some(7),
                    ..read("kitchen.temp", "21.50")
                },
                read("garage.door", r#""open""#),
                read("uptime", "12345678901234567890"),
            ],
            Some(7),
            now,
        );
        app
    }

    fn draw(app: &mut App) -> Buffer {
        draw_at(app, 100, 20)
    }

    fn draw_at(app: &mut App, width: u16, height: u16) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut offset = 0;
        terminal.draw(|frame| offset = render(app, frame)).unwrap();
        app.offset = offset;
        terminal.backend().buffer().clone()
    }

    fn lines(buffer: &Buffer) -> Vec<String> {
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn screen(buffer: &Buffer) -> String {
        lines(buffer).join("\n")
    }

    /// The row and column where `text` first appears in the list (the left 60%).
    fn find(buffer: &Buffer, text: &str) -> Option<(u16, u16)> {
        let width = usize::from(buffer.area.width) * 60 / 100;
        lines(buffer).iter().enumerate().find_map(|(y, line)| {
            let list: String = line.chars().take(width).collect();
            list.find(text).map(|byte| {
                let x = list[..byte].chars().count();
                (u16::try_from(x).unwrap(), u16::try_from(y).unwrap())
            })
        })
    }

    /// The status area, line by line without trailing blanks: the rows between the list's
    /// bottom border and the key help (the last row).
    fn status_lines(buffer: &Buffer) -> Vec<String> {
        let lines = lines(buffer);
        let bottom = lines
            .iter()
            .rposition(|line| line.starts_with('└'))
            .unwrap_or_else(|| panic!("no list border:\n{}", lines.join("\n")));
        lines[bottom + 1..lines.len() - 1]
            .iter()
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    /// The line of the list that shows `name`.
    fn list_line(buffer: &Buffer, name: &str) -> String {
        let (_, y) = find(buffer, name).unwrap_or_else(|| panic!("{name}:\n{}", screen(buffer)));
        lines(buffer)[usize::from(y)].clone()
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn flat_view_lists_every_register_sorted_with_exact_values() {
        let now = Instant::now();
        let mut app = app(now);
        let buffer = draw(&mut app);
        let text = screen(&buffer);
        let order: Vec<u16> = ["garage.door", "kitchen.lamp", "kitchen.temp", "uptime"]
            .iter()
            .map(|name| {
                find(&buffer, name)
                    .unwrap_or_else(|| panic!("{name}:\n{text}"))
                    .1
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("12345678901234567890"), "{text}");
        assert!(text.contains("21.50"), "{text}");
        assert!(text.contains("4 registers · flat"), "{text}");
        assert!(text.contains(" q  quit"), "{text}");
        assert!(text.contains("● live"), "{text}");
    }

    #[test]
    fn tree_view_groups_dotted_names_and_folds() {
        let now = Instant::now();
        let mut app = app(now);
        app.on_key(key(KeyCode::Char('t')));
        let buffer = draw(&mut app);
        let text = screen(&buffer);
        assert!(text.contains("▾ kitchen"), "{text}");
        assert!(text.contains("(2)"), "{text}");
        let (group_x, group_y) = find(&buffer, "▾ kitchen").unwrap();
        let (lamp_x, lamp_y) = find(&buffer, "lamp").unwrap();
        assert!(
            lamp_y > group_y && lamp_x > group_x,
            "leaf indented under its group:\n{text}"
        );
        assert!(!text.contains("kitchen.lamp  "), "{text}");

        // Select the kitchen group and fold it.
        while app.selected.as_deref() != Some("kitchen") {
            app.on_key(key(KeyCode::Down));
        }
        app.on_key(key(KeyCode::Left));
        let text = screen(&draw(&mut app));
        assert!(text.contains("▸ kitchen"), "{text}");
        assert!(!text.contains("lamp"), "{text}");
        assert!(text.contains("group: 2 registers below"), "{text}");
    }

    #[test]
    fn typing_a_filter_narrows_the_list() {
        let now = Instant::now();
        let mut app = app(now);
        app.on_key(key(KeyCode::Char('/')));
        type_text(&mut app, "KIT");
        let text = screen(&draw(&mut app));
        assert!(text.contains("filter: KIT"), "{text}");
        assert!(
            text.contains("kitchen.lamp") && text.contains("kitchen.temp"),
            "{text}"
        );
        assert!(
            !text.contains("garage.door") && !text.contains("uptime"),
            "{text}"
        );
        assert!(text.contains(" enter  keep"), "{text}");
        // `q` while filtering is a letter, not quit.
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), None);
        let text = screen(&draw(&mut app));
        assert!(text.contains("no register matches \"KITq\""), "{text}");
        app.on_key(key(KeyCode::Esc));
        let text = screen(&draw(&mut app));
        assert!(text.contains("garage.door"), "{text}");
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Some(Action::Quit));
        // Esc then q typed fast arrive as Alt+q: still clear, then quit.
        app.on_key(key(KeyCode::Char('/')));
        type_text(&mut app, "x");
        let alt_q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT);
        assert_eq!(app.on_key(alt_q), Some(Action::Quit));
        assert_eq!(app.filter, "");
    }

    #[test]
    fn details_show_value_metadata_revision_and_expiry() {
        let now = Instant::now();
        let mut app = app(now);
        while app.selected.as_deref() != Some("kitchen.temp") {
            app.on_key(key(KeyCode::Down));
        }
        app.tick(now + Duration::from_millis(1500));
        let text = screen(&draw(&mut app));
        assert!(text.contains("name      kitchen.temp"), "{text}");
        assert!(text.contains("revision  7"), "{text}");
        assert!(text.contains("expires in 3.5s"), "{text}");
        assert!(text.contains("\"unit\": \"C\""), "{text}");
        assert!(text.contains("  21.50"), "{text}");
    }

    #[test]
    fn a_register_that_disappears_is_red_for_a_while_then_goes() {
        let now = Instant::now();
        let mut app = app(now);
        let later = now + Duration::from_secs(1);
        app.apply_snapshot(
            vec![
                read("kitchen.lamp", "true"),
                read("kitchen.temp", "21.50"),
                read("uptime", "12345678901234567890"),
            ],
            Some(8),
            later,
        );
        let buffer = draw(&mut app);
        let (x, y) = find(&buffer, "garage.door").unwrap();
        assert_eq!(buffer[(x, y)].fg, Color::Red, "{}", screen(&buffer));
        let (x, y) = find(&buffer, "kitchen.lamp").unwrap();
        assert_ne!(buffer[(x, y)].fg, Color::Red);
        assert!(screen(&buffer).contains("3 registers"));

        app.tick(later + GONE_LINGER);
        let text = screen(&draw(&mut app));
        assert!(!text.contains("garage.door"), "{text}");
    }

    #[test]
    fn editing_a_value_sends_a_change_request_and_refuses_bad_json() {
        let now = Instant::now();
        let mut app = app(now);
        while app.selected.as_deref() != Some("kitchen.lamp") {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(app.on_key(key(KeyCode::Char('e'))), None);
        let text = screen(&draw(&mut app));
        assert!(text.contains("new value for kitchen.lamp: true"), "{text}");
        app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut app, "fals");
        assert_eq!(app.on_key(key(KeyCode::Enter)), None);
        let text = screen(&draw(&mut app));
        assert!(text.contains("not valid JSON"), "{text}");
        type_text(&mut app, "e");
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Some(Action::Request {
                name: "kitchen.lamp".to_owned(),
                value: json("false"),
            })
        );
        app.request_done("kitchen.lamp", &json("false"), Ok(()));
        let text = screen(&draw(&mut app));
        assert!(text.contains("waiting for the provider"), "{text}");
        app.apply_snapshot(
            vec![
                read("kitchen.lamp", "false"),
                read("kitchen.temp", "21.50"),
                read("garage.door", r#""open""#),
                read("uptime", "12345678901234567890"),
            ],
            Some(8),
            now,
        );
        let text = screen(&draw(&mut app));
        assert!(text.contains("the provider confirmed false"), "{text}");
    }

    #[test]
    fn selection_follows_the_register_and_the_list_scrolls() {
        let now = Instant::now();
        let mut app = App::new("http://reg.test".to_owned(), now);
        let many: Vec<Read> = (0..50).map(|i| read(&format!("r{i:02}"), "1")).collect();
        app.apply_snapshot(many, Some(50), now);
        app.on_key(key(KeyCode::End));
        let text = screen(&draw(&mut app));
        assert!(text.contains("r49") && !text.contains("r00"), "{text}");
        assert!(app.offset > 0);
        app.on_key(key(KeyCode::Home));
        let text = screen(&draw(&mut app));
        assert!(text.contains("r00"), "{text}");
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        let now = Instant::now();
        let mut app = app(now);
        let sizes = [(1, 1), (10, 3), (0, 0), (30, 5), (2, 40), (40, 2)];
        for connection in [
            None,
            Some("x ".repeat(500) + &"é界".repeat(300) + &"y".repeat(3000)),
        ] {
            if let Some(error) = connection {
                app.connection_failed(error);
            }
            for (w, h) in sizes {
                let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
                let mut offset = 0;
                terminal.draw(|frame| offset = render(&app, frame)).unwrap();
                app.offset = offset;
            }
        }
    }

    /// What a refused connection says (`ClientError::Connect`), longer than 80 columns.
    const REFUSED: &str = "cannot connect to http://127.0.0.1:9: client error (Connect): \
        tcp connect error: Connection refused (os error 111)";

    #[test]
    fn unreachable_shows_the_whole_error_at_80_and_40_columns_and_not_no_registers() {
        let now = Instant::now();
        for width in [80, 40, 200] {
            let mut app = App::new("http://127.0.0.1:9".to_owned(), now);
            app.connection_failed(REFUSED.to_owned());
            app.connection_failed(REFUSED.to_owned());
            let buffer = draw_at(&mut app, width, 24);
            let text = screen(&buffer);
            assert!(!text.contains("no registers"), "{width} columns:\n{text}");
            assert!(text.contains("cannot reach"), "{width} columns:\n{text}");
            assert!(
                text.contains("┌ unreachable · flat"),
                "{width} columns:\n{text}"
            );
            let status = status_lines(&buffer);
            assert_eq!(
                status.join(" "),
                format!("✗ unreachable (attempt 2): {REFUSED}"),
                "{width} columns:\n{text}"
            );
            if width < 100 {
                assert!(status.len() > 1, "wrapped, not cut:\n{text}");
            }
        }
    }

    #[test]
    fn a_lost_server_says_reconnecting_and_keeps_the_last_read_marked_as_such() {
        let now = Instant::now();
        let mut app = app(now);
        app.connection_failed(REFUSED.to_owned());
        let buffer = draw_at(&mut app, 80, 24);
        let text = screen(&buffer);
        assert_eq!(
            status_lines(&buffer).join(" "),
            format!("reconnecting (attempt 1): {REFUSED}"),
            "{text}"
        );
        assert!(
            text.contains(" unreachable · 4 registers as last read"),
            "{text}"
        );
        assert!(!text.contains("● live"), "{text}");
        // Filtered down to nothing while unreachable: still says unreachable, not empty.
        app.filter = "nothing matches".to_owned();
        app.registers.clear();
        let text = screen(&draw_at(&mut app, 80, 24));
        assert!(text.contains("cannot reach http://reg.test"), "{text}");
        assert!(!text.contains("no registers"), "{text}");
    }

    #[test]
    fn before_the_first_answer_it_says_connecting_and_an_empty_registry_says_no_registers() {
        let now = Instant::now();
        let mut app = App::new("http://reg.test".to_owned(), now);
        let buffer = draw_at(&mut app, 80, 24);
        let text = screen(&buffer);
        assert_eq!(status_lines(&buffer), ["connecting to http://reg.test…"]);
        assert!(!text.contains("no registers"), "{text}");
        app.apply_snapshot(Vec::new(), Some(0), now);
        let buffer = draw_at(&mut app, 80, 24);
        let text = screen(&buffer);
        assert!(text.contains("no registers"), "{text}");
        assert_eq!(status_lines(&buffer), ["● live · http://reg.test"]);
    }

    #[test]
    fn live_shows_in_the_status_line_at_narrow_widths() {
        let now = Instant::now();
        let mut app = app(now);
        app.url = "http://registry.example.internal:8080/some/prefix".to_owned();
        for width in [60, 80, 109] {
            let buffer = draw_at(&mut app, width, 20);
            let status = status_lines(&buffer);
            assert!(
                status
                    .first()
                    .is_some_and(|line| line.starts_with("● live")),
                "{width} columns:\n{}",
                screen(&buffer)
            );
            assert_eq!(buffer[(0, 18)].fg, Color::Green, "{}", screen(&buffer));
        }
    }

    #[test]
    fn a_server_without_the_watch_stream_says_removals_show_as_gone() {
        let now = Instant::now();
        let mut app = app(now);
        app.watch = Watch::Unsupported;
        let buffer = draw_at(&mut app, 40, 24);
        assert_eq!(
            status_lines(&buffer).join(" "),
            "● live · http://reg.test · no watch stream at this server: removals show as gone",
            "{}",
            screen(&buffer)
        );
    }

    #[test]
    fn removals_show_expired_or_deleted_as_the_watch_stream_says_else_gone() {
        let now = Instant::now();
        let mut app = app(now);
        let later = now + Duration::from_millis(100);
        // The watch stream is quicker than the next read: garage.door expired at 8,
        // kitchen.lamp was deleted at 9; uptime goes without a word from the stream.
        app.apply_removal("garage.door", Removal::Expired, Some(8), later);
        app.apply_removal("kitchen.lamp", Removal::Deleted, Some(9), later);
        let buffer = draw(&mut app);
        assert!(list_line(&buffer, "garage.door").contains("expired"));
        assert!(list_line(&buffer, "kitchen.lamp").contains("deleted"));
        assert!(list_line(&buffer, "uptime").contains("12345678901234567890"));
        app.apply_snapshot(vec![read("kitchen.temp", "21.50")], Some(10), later);
        let buffer = draw(&mut app);
        let text = screen(&buffer);
        for (name, word) in [
            ("garage.door", "expired"),
            ("kitchen.lamp", "deleted"),
            ("uptime", "gone"),
        ] {
            let line = list_line(&buffer, name);
            assert!(line.contains(word), "{name} {word}:\n{text}");
            let (x, y) = find(&buffer, name).unwrap();
            assert_eq!(buffer[(x, y)].fg, Color::Red, "{text}");
        }
        assert!(
            !list_line(&buffer, "kitchen.temp").contains("gone"),
            "{text}"
        );
        assert!(text.contains(" 1 register · flat"), "{text}");
        // The details say it too.
        let details = |app: &mut App, name: &str| {
            while app.selected.as_deref() != Some(name) {
                app.on_key(key(KeyCode::Down));
            }
            screen(&draw(app))
        };
        assert!(details(&mut app, "garage.door").contains("state     expired"));
        assert!(details(&mut app, "kitchen.lamp").contains("state     deleted"));
        assert!(details(&mut app, "uptime").contains("state     gone"));
        assert!(!text.contains("removed"), "one vocabulary: {text}");
    }

    #[test]
    fn a_read_older_than_a_removal_does_not_bring_it_back_and_a_new_set_does() {
        let now = Instant::now();
        let mut app = app(now);
        app.apply_removal("garage.door", Removal::Deleted, Some(8), now);
        // A read at revision 7, answered after the stream's delete at 8.
        app.apply_snapshot(
            vec![read("garage.door", r#""open""#), read("uptime", "1")],
            Some(7),
            now,
        );
        assert!(list_line(&draw(&mut app), "garage.door").contains("deleted"));
        // Set again at 9: live.
        let again = Read {
            revision: Some(9),
            ..read("garage.door", r#""shut""#)
        };
        app.apply_snapshot(vec![again, read("uptime", "1")], Some(9), now);
        let buffer = draw(&mut app);
        assert!(list_line(&buffer, "garage.door").contains(r#""shut""#));
        // Gone again with no word from the stream: the old delete does not stick to it.
        app.apply_snapshot(vec![read("uptime", "1")], Some(10), now);
        let line = list_line(&draw(&mut app), "garage.door");
        assert!(line.contains("gone") && !line.contains("deleted"), "{line}");
        // A removal older than what is on screen changes nothing.
        app.apply_removal("uptime", Removal::Expired, Some(1), now);
        assert!(!list_line(&draw(&mut app), "uptime").contains("expired"));
    }

    #[test]
    fn wrap_keeps_every_word_within_the_width_and_breaks_only_overlong_ones() {
        let text = |lines: &[Line<'_>]| -> Vec<String> {
            lines.iter().map(|line| line.to_string()).collect()
        };
        let pieces = [
            ("state:".to_owned(), GONE),
            ("a  bb ccc\ndddd".to_owned(), Style::new()),
        ];
        assert_eq!(text(&wrap(&pieces, 9)), ["state: a", "bb ccc", "dddd"]);
        let lines = wrap(&pieces, 9);
        assert_eq!(lines[0].spans[0].style, GONE);
        assert_eq!(lines[0].spans[2].style, Style::new());
        let long = [("xy 0123456789abc z".to_owned(), Style::new())];
        assert_eq!(text(&wrap(&long, 5)), ["xy", "01234", "56789", "abc z"]);
        // Double-width characters count two columns.
        let wide = [("界界界".to_owned(), Style::new())];
        assert_eq!(text(&wrap(&wide, 4)), ["界界", "界"]);
        assert_eq!(text(&wrap(&wide, 1)), ["界", "界", "界"]);
        assert_eq!(text(&wrap(&[], 10)), [""]);
        assert_eq!(text(&wrap(&long, 0)), [""]);
    }

    #[test]
    fn pretty_keeps_numbers_exact() {
        assert_eq!(pretty(&json("[]")), "[]");
        assert_eq!(
            pretty(&json(r#"{"b":[1.50,{"x":null}],"a":"é\n"}"#)),
            "{\n  \"a\": \"é\\n\",\n  \"b\": [\n    1.50,\n    {\n      \"x\": null\n    }\n  ]\n}"
        );
    }

    /// The register of `instance`, as a read gives it.
    fn instance_read(instance: &Instance) -> Read {
        Read {
            value: instance.to_json(),
            ..read(&instance.register_name(), "null")
        }
    }

    /// Two services (web: a passing and a critical instance; db: a warning one), registers
    /// under `svc/` that are not instances, and a register outside it.
    fn services_app(now: Instant) -> App {
        let mut app = App::new("http://reg.test".to_owned(), now);
        app.apply_snapshot(
            vec![
                instance_read(
                    &Instance::new("web", "web-1")
                        .address("10.0.0.5")
                        .port(8080)
                        .version("1.4.2")
                        .tag("primary")
                        .tag("eu"),
                ),
                instance_read(
                    &Instance::new("web", "web-2")
                        .address("10.0.0.6")
                        .port(8081)
                        .version("1.4.1")
                        .status(Health::Critical),
                ),
                instance_read(
                    &Instance::new("db", "db-1")
                        .address("fd00::7")
                        .port(5432)
                        .status(Health::Warning),
                ),
                // Not instances: a value that is no object, a service the name contradicts,
                // a name without an id.
                read("svc/broken/x1", r#""not an instance""#),
                read("svc/web/liar", r#"{"service":"api"}"#),
                read("svc/lonely", "{}"),
                read("kitchen.lamp", "true"),
            ],
            Some(7),
            now,
        );
        app.on_key(key(KeyCode::Char('s')));
        app
    }

    /// The foreground colour of the list cell where `text` starts on the line showing `row`.
    fn colour_at(buffer: &Buffer, row: &str, text: &str) -> Color {
        let (_, y) = find(buffer, row).unwrap_or_else(|| panic!("{row}:\n{}", screen(buffer)));
        let line = &lines(buffer)[usize::from(y)];
        let byte = line
            .find(text)
            .unwrap_or_else(|| panic!("{text} on {line:?}:\n{}", screen(buffer)));
        let x = u16::try_from(line[..byte].chars().count()).unwrap();
        buffer[(x, y)].fg
    }

    #[test]
    fn services_view_shows_each_service_with_its_instances_counts_and_colours() {
        let now = Instant::now();
        let mut app = services_app(now);
        assert_eq!(app.view, ViewMode::Services);
        let buffer = draw_at(&mut app, 120, 24);
        let text = screen(&buffer);
        assert!(text.contains(" · services · http://reg.test"), "{text}");
        assert!(text.contains("ADDRESS"), "{text}");
        assert!(text.contains("STATUS"), "{text}");

        // A row per service with its counts, sorted; its instances below it, indented.
        let db = list_line(&buffer, "▾ db");
        assert!(db.contains("1 instance, 0 passing"), "{text}");
        let web = list_line(&buffer, "▾ web");
        assert!(web.contains("2 instances, 1 passing"), "{text}");
        let at = |name: &str| find(&buffer, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
        let (service_x, db_y) = at("▾ db");
        let (_, web_y) = at("▾ web");
        let (id_x, web1_y) = at("web-1");
        let (_, web2_y) = at("web-2");
        let (_, db1_y) = at("db-1");
        assert!(db_y < db1_y && db1_y < web_y, "{text}");
        assert!(web_y < web1_y && web1_y < web2_y, "{text}");
        assert!(
            id_x > service_x,
            "instances indented under the service:\n{text}"
        );

        // Each instance: id, address:port, version, tags, status.
        let web1 = list_line(&buffer, "web-1");
        for part in ["10.0.0.5:8080", "1.4.2", "primary,eu", "passing"] {
            assert!(web1.contains(part), "{part}:\n{text}");
        }
        let web2 = list_line(&buffer, "web-2");
        for part in ["10.0.0.6:8081", "1.4.1", "critical"] {
            assert!(web2.contains(part), "{part}:\n{text}");
        }
        let db1 = list_line(&buffer, "db-1");
        assert!(
            db1.contains("[fd00::7]:5432") && db1.contains("warning"),
            "{text}"
        );
        // The columns line up.
        assert_eq!(web1.find("1.4.2"), web2.find("1.4.1"), "{text}");

        // The status in colour: only the status cell.
        assert_eq!(
            colour_at(&buffer, "web-1", "passing"),
            Color::Green,
            "{text}"
        );
        assert_eq!(
            colour_at(&buffer, "web-2", "critical"),
            Color::Red,
            "{text}"
        );
        assert_eq!(
            colour_at(&buffer, "db-1", "warning"),
            Color::Yellow,
            "{text}"
        );
        assert_ne!(
            colour_at(&buffer, "web-2", "10.0.0.6"),
            Color::Red,
            "{text}"
        );

        // What is not an instance is left out here…
        for name in ["broken", "x1", "liar", "lonely", "kitchen"] {
            assert!(find(&buffer, name).is_none(), "{name}:\n{text}");
        }
        assert!(text.contains(" s  flat"), "{text}");
        // …and still in the other views.
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.view, ViewMode::Flat);
        let text = screen(&draw_at(&mut app, 120, 24));
        for name in [
            "svc/broken/x1",
            "svc/web/liar",
            "svc/lonely",
            "svc/web/web-1",
        ] {
            assert!(text.contains(name), "{name}:\n{text}");
        }
        assert!(text.contains(" s  services"), "{text}");
    }

    #[test]
    fn an_empty_services_view_says_so() {
        let now = Instant::now();
        // Before the first answer: connecting, as in the other views.
        let mut app = App::new("http://reg.test".to_owned(), now);
        app.on_key(key(KeyCode::Char('s')));
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains("connecting to http://reg.test…"), "{text}");
        assert!(!text.contains(NO_SERVICES), "{text}");
        // An empty registry.
        app.apply_snapshot(Vec::new(), Some(0), now);
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains(NO_SERVICES), "{text}");
        // Registers, none an instance (one under svc/ that is not).
        app.apply_snapshot(
            vec![read("kitchen.lamp", "true"), read("svc/web/web-1", "[1]")],
            Some(1),
            now,
        );
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains(NO_SERVICES), "{text}");
        assert!(!text.contains("no register matches"), "{text}");
        // Instances, none matching the filter.
        let mut app = services_app(now);
        app.filter = "nothing".to_owned();
        app.sync_selection();
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains("no instance matches \"nothing\""), "{text}");
    }

    #[test]
    fn an_instance_row_is_its_register_details_edit_and_all_and_a_service_folds() {
        let now = Instant::now();
        let mut app = services_app(now);
        while app.selected.as_deref() != Some("svc/web/web-2") {
            app.on_key(key(KeyCode::Down));
        }
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains("name      svc/web/web-2"), "{text}");
        assert!(text.contains("state     live"), "{text}");
        assert!(text.contains("\"status\": \"critical\""), "{text}");
        app.on_key(key(KeyCode::Char('e')));
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains("new value for svc/web/web-2: {"), "{text}");
        app.on_key(key(KeyCode::Esc));

        // Left goes to the service, Left again folds it.
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.selected.as_deref(), Some("svc/web"));
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(
            text.contains("service web: 2 instances, 1 passing"),
            "{text}"
        );
        app.on_key(key(KeyCode::Left));
        let buffer = draw_at(&mut app, 120, 24);
        let text = screen(&buffer);
        assert!(
            list_line(&buffer, "▸ web").contains("2 instances"),
            "{text}"
        );
        assert!(find(&buffer, "web-1").is_none(), "{text}");
        // Enter on a service unfolds it rather than editing.
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Normal);
        assert!(find(&draw_at(&mut app, 120, 24), "web-1").is_some());

        // `s` goes back to the names view it came from.
        app.on_key(key(KeyCode::Char('s')));
        app.on_key(key(KeyCode::Char('t')));
        assert_eq!(app.view, ViewMode::Tree);
        app.on_key(key(KeyCode::Char('s')));
        let text = screen(&draw_at(&mut app, 120, 24));
        assert!(text.contains(" s  tree"), "{text}");
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.view, ViewMode::Tree);
    }

    #[test]
    fn a_removed_instance_fades_red_and_leaves_the_counts() {
        let now = Instant::now();
        let mut app = services_app(now);
        let later = now + Duration::from_millis(100);
        app.apply_removal("svc/web/web-1", Removal::Deleted, Some(8), later);
        let buffer = draw_at(&mut app, 120, 24);
        let text = screen(&buffer);
        let web1 = list_line(&buffer, "web-1");
        assert!(
            web1.contains("deleted") && !web1.contains("passing"),
            "{text}"
        );
        assert_eq!(colour_at(&buffer, "web-1", "web-1"), Color::Red, "{text}");
        assert_eq!(colour_at(&buffer, "web-1", "deleted"), Color::Red, "{text}");
        assert!(
            list_line(&buffer, "▾ web").contains("1 instance, 0 passing"),
            "{text}"
        );
        // The last one going takes its service with it.
        app.apply_removal("svc/db/db-1", Removal::Expired, Some(9), later);
        let buffer = draw_at(&mut app, 120, 24);
        assert!(list_line(&buffer, "db-1").contains("expired"));
        assert!(list_line(&buffer, "▾ db").contains("0 instances, 0 passing"));
        app.tick(later + GONE_LINGER);
        let buffer = draw_at(&mut app, 120, 24);
        let text = screen(&buffer);
        assert!(
            find(&buffer, "web-1").is_none() && find(&buffer, "db").is_none(),
            "{text}"
        );
        assert!(list_line(&buffer, "web-2").contains("critical"), "{text}");
    }
}
