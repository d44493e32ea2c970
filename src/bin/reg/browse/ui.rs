//! Drawing the browser: a pure function of the [`App`] state (tested with ratatui's
//! `TestBackend` below).

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap};
use ratatui::Frame;
use reg::json::{parse_tree, Node};
use reg::Json;

use super::app::{App, Connection, Entry, Mode, Row, ViewMode, CHANGED_HIGHLIGHT};

/// The style of a register that expired or was removed.
pub(crate) const GONE: Style = Style::new().fg(Color::Red);
/// The style of a register whose value just changed.
const CHANGED: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
const KEY: Style = Style::new().add_modifier(Modifier::REVERSED);
const DIM: Style = Style::new().fg(Color::DarkGray);
const LABEL: Style = Style::new().add_modifier(Modifier::BOLD);

/// Draws the whole screen. Returns the list's scroll offset, for the next frame (the only
/// state drawing produces).
pub(crate) fn render(app: &App, frame: &mut Frame<'_>) -> usize {
    let [main, status, footer] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [list, details] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(main);
    let rows = app.rows();
    let offset = render_list(app, &rows, frame, list);
    render_details(app, rows.get(app.cursor), frame, details);
    render_status(app, frame, status);
    render_footer(app, frame, footer);
    offset
}

fn render_list(app: &App, rows: &[Row<'_>], frame: &mut Frame<'_>, area: Rect) -> usize {
    let live = app
        .registers
        .values()
        .filter(|e| e.gone_since.is_none())
        .count();
    let view = match app.view {
        ViewMode::Flat => "flat",
        ViewMode::Tree => "tree",
    };
    let connection = match &app.connection {
        Connection::Connecting => Span::styled(" connecting… ", Style::new().fg(Color::Yellow)),
        Connection::Live => Span::styled(" ● live ", Style::new().fg(Color::Green)),
        Connection::Failed(error) => Span::styled(format!(" ✗ {error} "), GONE),
    };
    let block = Block::bordered()
        .title(Line::from(format!(
            " reg browse · {} · {live} registers · {view} ",
            app.url
        )))
        .title(Line::from(connection).right_aligned());
    if rows.is_empty() {
        let text = if app.registers.is_empty() {
            "no registers".to_owned()
        } else {
            format!("no register matches {:?}", app.filter)
        };
        frame.render_widget(Paragraph::new(text).style(DIM).block(block), area);
        return 0;
    }
    let table_rows = rows.iter().map(|row| {
        let mut name = "  ".repeat(row.depth);
        if let Some((_, folded)) = row.group {
            name.push_str(if folded { "▸ " } else { "▾ " });
        }
        name.push_str(&row.label);
        let value = match (row.entry, row.group) {
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
    let table = Table::new(
        table_rows,
        [Constraint::Percentage(45), Constraint::Percentage(55)],
    )
    .header(TableRow::new(["NAME", "VALUE"]).style(LABEL))
    .block(block)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("▶ ");
    let mut state = TableState::default()
        .with_offset(app.offset)
        .with_selected(Some(app.cursor));
    frame.render_stateful_widget(table, area, &mut state);
    state.offset()
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
                Some(_) => Span::styled("gone (expired or removed)", GONE),
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
            lines.push(Line::raw(format!("group: {count} registers below")));
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

fn render_status(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let (line, cursor) = match &app.mode {
        Mode::Filter => {
            let line = Line::from(vec![
                Span::styled("filter: ", LABEL),
                Span::raw(app.filter.clone()),
            ]);
            let width = line.width();
            (line, Some(width))
        }
        Mode::Edit { name, input, error } => {
            let mut spans = vec![
                Span::styled(format!("new value for {name}: "), LABEL),
                Span::raw(input.clone()),
            ];
            let width = spans.iter().map(Span::width).sum();
            if let Some(error) = error {
                spans.push(Span::styled(format!("  {error}"), GONE));
            }
            (Line::from(spans), Some(width))
        }
        Mode::Normal => match &app.status {
            Some(status) => (
                Line::styled(
                    status.text.clone(),
                    if status.error { GONE } else { Style::new() },
                ),
                None,
            ),
            None if !app.filter.is_empty() => (
                Line::from(vec![
                    Span::styled("filter: ", LABEL),
                    Span::raw(app.filter.clone()),
                ]),
                None,
            ),
            None => (Line::raw(""), None),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
    if let Some(width) = cursor {
        let x = u16::try_from(width)
            .unwrap_or(u16::MAX)
            .min(area.width.saturating_sub(1));
        frame.set_cursor_position((area.x + x, area.y));
    }
}

fn render_footer(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let keys: &[(&str, &str)] = match app.mode {
        Mode::Normal => &[
            ("q", "quit"),
            ("/", "filter"),
            (
                "t",
                match app.view {
                    ViewMode::Flat => "tree view",
                    ViewMode::Tree => "flat view",
                },
            ),
            ("e", "edit value"),
            ("↑↓", "move"),
            ("←→", "fold"),
        ],
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

    use super::super::app::{Action, Read, GONE_LINGER};
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
            now,
        );
        app
    }

    fn draw(app: &mut App) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
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
        lines(buffer).iter().enumerate().find_map(|(y, line)| {
            let list: String = line.chars().take(60).collect();
            list.find(text).map(|byte| {
                let x = list[..byte].chars().count();
                (u16::try_from(x).unwrap(), u16::try_from(y).unwrap())
            })
        })
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
        app.apply_snapshot(many, now);
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
        for (w, h) in [(1, 1), (10, 3), (0, 0), (30, 5)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            let mut offset = 0;
            terminal.draw(|frame| offset = render(&app, frame)).unwrap();
            app.offset = offset;
        }
    }

    #[test]
    fn pretty_keeps_numbers_exact() {
        assert_eq!(pretty(&json("[]")), "[]");
        assert_eq!(
            pretty(&json(r#"{"b":[1.50,{"x":null}],"a":"é\n"}"#)),
            "{\n  \"a\": \"é\\n\",\n  \"b\": [\n    1.50,\n    {\n      \"x\": null\n    }\n  ]\n}"
        );
    }
}
