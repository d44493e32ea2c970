//! The browser's state and everything that changes it: registry snapshots, keys, time. No
//! terminal and no I/O here: the event loop (`mod.rs`) feeds it, `ui.rs` draws it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use reg::client::RegisterValue;
use reg::discovery::{self, Instance, Status as Health};
use reg::{Json, Revision};
use tokio::time::Instant;

/// How long a register that expired or was removed stays on screen, in red: 3 s.
pub(crate) const GONE_LINGER: Duration = Duration::from_secs(3);
/// How long a register whose value just changed is highlighted: 1 s.
pub(crate) const CHANGED_HIGHLIGHT: Duration = Duration::from_secs(1);
/// Rows moved by PageUp/PageDown.
const PAGE: usize = 10;

/// One register as the browser knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Json,
    pub(crate) metadata: Option<Json>,
    pub(crate) revision: Option<u64>,
    pub(crate) created: Option<u64>,
    /// When it expires unless refreshed: read time + `expires_in` (detail reads only).
    pub(crate) expires_at: Option<Instant>,
    /// When its value or metadata last changed while we watched (`None`: as first seen).
    pub(crate) changed_at: Option<Instant>,
    /// When it disappeared (expired or deleted): shown red until [`GONE_LINGER`] later.
    pub(crate) gone_since: Option<Instant>,
    /// How it disappeared, when the watch stream said (`None`: not gone, or not known).
    pub(crate) removal: Option<Removal>,
}

/// How a register went away, as the watch stream reports it (`delete` / `expire` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Deleted,
    Expired,
}

/// One register as read from the registry (`GET /consumer?detail=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    pub(crate) name: String,
    pub(crate) value: Json,
    pub(crate) metadata: Option<Json>,
    pub(crate) revision: Option<u64>,
    pub(crate) created: Option<u64>,
    pub(crate) expires_in: Option<Duration>,
}

impl From<RegisterValue> for Read {
    fn from(register: RegisterValue) -> Self {
        Self {
            name: register.name.to_string(),
            value: register.value,
            metadata: register.metadata,
            revision: register.revision,
            created: register.created,
            expires_in: register.expires_in,
        }
    }
}

/// Flat list or tree of dotted names, or the services: each service with its instances
/// below it (the registers `svc/<service>/<id>` whose value is an instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewMode {
    Flat,
    Tree,
    Services,
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Moving around.
    Normal,
    /// Typing the filter.
    Filter,
    /// Typing a new value for `name`.
    Edit {
        name: String,
        input: String,
        /// Why the last Enter was refused.
        error: Option<String>,
    },
}

/// The state of the connection to the registry (the detail reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// No read has answered yet.
    Connecting,
    /// The last read succeeded.
    Live,
    /// The last `attempts` reads failed.
    Failed {
        /// Why the last one failed.
        error: String,
        attempts: u32,
        /// Whether a read ever succeeded: reconnecting, rather than unreachable.
        was_live: bool,
    },
}

/// The state of the watch stream, where the kinds of removals come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Not open yet (it opens after the first read, from that read's revision).
    Waiting,
    Streaming,
    /// The server has no `/v1/watch` (a Part-A server): removals show as `gone`.
    Unsupported,
    /// The stream broke or could not be opened; it is being reopened.
    Broken(String),
}

/// A message in the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) text: String,
    pub(crate) error: bool,
}

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    /// Send a change request.
    Request {
        name: String,
        value: Json,
    },
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row<'a> {
    /// The row's identity: the register's name, or a group's dotted prefix.
    pub(crate) key: String,
    /// Indentation level (tree view).
    pub(crate) depth: usize,
    /// What the name column shows: the whole name (flat) or the last segment (tree).
    pub(crate) label: String,
    /// The register at this key, if there is one (a group may have none).
    pub(crate) entry: Option<&'a Entry>,
    /// For a group: how many registers are below it, and whether it is folded. For a
    /// service: how many of its instances are live (not gone), and whether it is folded.
    pub(crate) group: Option<(usize, bool)>,
    /// In the services view: what the row is (`None` in the other views).
    pub(crate) service: Option<ServiceRow>,
}

/// What a row of the services view is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceRow {
    /// A service: how many of its live instances are passing (how many are live is the
    /// row's `group`).
    Service { passing: usize },
    /// An instance, as its register's value says (its register is the row's `entry`).
    Instance(Box<Instance>),
}

/// The whole state of `reg browse`.
#[derive(Debug)]
pub(crate) struct App {
    /// The registry's URL, for the title.
    pub(crate) url: String,
    pub(crate) registers: BTreeMap<String, Entry>,
    pub(crate) view: ViewMode,
    /// The names view (flat or tree) that leaving the services view goes back to.
    pub(crate) names_view: ViewMode,
    /// Case-insensitive substring of the names to show.
    pub(crate) filter: String,
    pub(crate) mode: Mode,
    /// Tree groups and services (`svc/<service>`) folded by the user.
    pub(crate) collapsed: BTreeSet<String>,
    /// The selected row's key: the selection follows the register, not the position.
    pub(crate) selected: Option<String>,
    /// The selected row's position in [`App::rows`].
    pub(crate) cursor: usize,
    /// The list's scroll offset, as the last render left it.
    pub(crate) offset: usize,
    pub(crate) connection: Connection,
    pub(crate) watch: Watch,
    /// Removals the watch stream reported that no read has caught up with yet: the kind and
    /// the revision of each, so a read made before the removal cannot bring it back.
    removals: BTreeMap<String, (Removal, Revision)>,
    pub(crate) status: Option<Status>,
    /// A change request sent from here, until the provider confirms it.
    pub(crate) pending: Option<(String, Json)>,
    /// The time the screen shows (countdowns, red rows): set by the event loop.
    pub(crate) now: Instant,
}

impl App {
    pub(crate) fn new(url: String, now: Instant) -> Self {
        Self {
            url,
            registers: BTreeMap::new(),
            view: ViewMode::Flat,
            names_view: ViewMode::Flat,
            filter: String::new(),
            mode: Mode::Normal,
            collapsed: BTreeSet::new(),
            selected: None,
            cursor: 0,
            offset: 0,
            connection: Connection::Connecting,
            watch: Watch::Waiting,
            removals: BTreeMap::new(),
            status: None,
            pending: None,
            now,
        }
    }

    /// Takes a full read of the registry at revision `index` (`X-Reg-Index`), made at
    /// `read_at`: updates what changed, marks what disappeared as gone (with its kind, when
    /// the watch stream told it first).
    pub(crate) fn apply_snapshot(
        &mut self,
        registers: Vec<Read>,
        index: Option<Revision>,
        read_at: Instant,
    ) {
        self.connection = Connection::Live;
        self.now = self.now.max(read_at);
        let mut seen = BTreeSet::new();
        for register in registers {
            let name = register.name;
            // A read that predates a removal the watch stream already reported.
            let stale = self.removals.get(&name).is_some_and(|(_, removed)| {
                register
                    .revision
                    .is_some_and(|revision| revision <= *removed)
            });
            if stale {
                continue;
            }
            let expires_at = register.expires_in.map(|left| read_at + left);
            seen.insert(name.clone());
            match self.registers.get_mut(&name) {
                Some(entry) => {
                    let changed = entry.value != register.value
                        || entry.metadata != register.metadata
                        || entry.gone_since.is_some();
                    if changed {
                        entry.changed_at = Some(read_at);
                    }
                    entry.value = register.value;
                    entry.metadata = register.metadata;
                    entry.revision = register.revision;
                    entry.created = register.created;
                    entry.expires_at = expires_at;
                    entry.gone_since = None;
                    entry.removal = None;
                }
                None => {
                    self.registers.insert(
                        name.clone(),
                        Entry {
                            value: register.value,
                            metadata: register.metadata,
                            revision: register.revision,
                            created: register.created,
                            expires_at,
                            changed_at: None,
                            gone_since: None,
                            removal: None,
                        },
                    );
                }
            }
        }
        for (name, entry) in &mut self.registers {
            if entry.gone_since.is_none() && !seen.contains(name) {
                entry.gone_since = Some(read_at);
                entry.removal = self.removals.get(name).map(|(removal, _)| *removal);
            }
        }
        // What this read has caught up with is on the entries now.
        self.removals
            .retain(|_, (_, removed)| index.is_some_and(|index| index < *removed));
        if let Some((name, value)) = &self.pending {
            if self
                .registers
                .get(name)
                .is_some_and(|e| e.gone_since.is_none() && &e.value == value)
            {
                self.status = Some(Status {
                    text: format!("{name}: the provider confirmed {value}"),
                    error: false,
                });
                self.pending = None;
            }
        }
        self.sync_selection();
    }

    /// The watch stream reported that `name` was deleted or expired at `revision`: shows it
    /// gone at once, with its kind, unless what is on screen is newer than that.
    pub(crate) fn apply_removal(
        &mut self,
        name: &str,
        removal: Removal,
        revision: Option<Revision>,
        at: Instant,
    ) {
        self.now = self.now.max(at);
        if let Some(entry) = self.registers.get_mut(name) {
            let older = match (entry.revision, revision) {
                (Some(set), Some(removed)) => set < removed,
                // Without revisions, the latest news wins.
                _ => true,
            };
            if older {
                entry.gone_since.get_or_insert(at);
                entry.removal = Some(removal);
            }
        }
        if let Some(revision) = revision {
            self.removals.insert(name.to_owned(), (removal, revision));
        }
    }

    /// A read failed.
    pub(crate) fn connection_failed(&mut self, error: String) {
        self.connection = match &self.connection {
            Connection::Connecting => Connection::Failed {
                error,
                attempts: 1,
                was_live: false,
            },
            Connection::Live => Connection::Failed {
                error,
                attempts: 1,
                was_live: true,
            },
            Connection::Failed {
                attempts, was_live, ..
            } => Connection::Failed {
                error,
                attempts: attempts.saturating_add(1),
                was_live: *was_live,
            },
        };
    }

    /// Time passes: gone registers leave the screen after [`GONE_LINGER`].
    pub(crate) fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let before = self.registers.len();
        let now = self.now;
        self.registers
            .retain(|_, entry| entry.gone_since.is_none_or(|gone| now < gone + GONE_LINGER));
        if self.registers.len() != before {
            self.sync_selection();
        }
    }

    /// The outcome of a change request sent for `name`.
    pub(crate) fn request_done(&mut self, name: &str, value: &Json, result: Result<(), String>) {
        self.status = Some(match result {
            Ok(()) => {
                self.pending = Some((name.to_owned(), value.clone()));
                Status {
                    text: format!("{name}: asked for {value}; waiting for the provider"),
                    error: false,
                }
            }
            Err(error) => Status {
                text: format!("{name}: the change request failed: {error}"),
                error: true,
            },
        });
    }

    /// Whether the filter matches `name`.
    fn matches(&self, name: &str) -> bool {
        self.filter.is_empty() || name.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// The rows on screen, in order.
    pub(crate) fn rows(&self) -> Vec<Row<'_>> {
        let names = self.registers.keys().filter(|name| self.matches(name));
        match self.view {
            ViewMode::Flat => names
                .map(|name| Row {
                    key: name.clone(),
                    depth: 0,
                    label: name.clone(),
                    entry: self.registers.get(name),
                    group: None,
                    service: None,
                })
                .collect(),
            ViewMode::Tree => {
                let mut root = TreeNode::default();
                for name in names {
                    let mut node = &mut root;
                    for segment in name.split('.') {
                        node = node.children.entry(segment.to_owned()).or_default();
                    }
                    node.register = true;
                }
                let mut rows = Vec::new();
                // While filtering, every group is open so every match shows.
                let unfold_all = !self.filter.is_empty();
                root.flatten(self, None, 0, unfold_all, &mut rows);
                rows
            }
            ViewMode::Services => self.service_rows(),
        }
    }

    /// The instances among the registers the filter matches (all of them with `all`), by
    /// service, each service's by id: every register under `svc/` whose value parses as an
    /// instance. Gone ones are kept (they fade red like any register).
    fn instances(&self, all: bool) -> BTreeMap<String, Vec<(&String, &Entry, Instance)>> {
        let mut services: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (name, entry) in &self.registers {
            if !discovery::is_reserved(name) || !(all || self.matches(name)) {
                continue;
            }
            if let Ok(instance) = discovery::parse(name, &entry.value) {
                services
                    .entry(instance.service.clone())
                    .or_default()
                    .push((name, entry, instance));
            }
        }
        services
    }

    /// Whether any register is an instance, whatever the filter.
    pub(crate) fn any_instance(&self) -> bool {
        !self.instances(true).is_empty()
    }

    /// The rows of the services view: a row per service (key `svc/<service>`), and below it,
    /// unless it is folded, a row per instance (key: its register's name).
    fn service_rows(&self) -> Vec<Row<'_>> {
        // While filtering, every service is open so every match shows.
        let unfold_all = !self.filter.is_empty();
        let mut rows = Vec::new();
        for (service, instances) in self.instances(false) {
            let key = format!("{}{service}", discovery::PREFIX);
            let live = || {
                instances
                    .iter()
                    .filter(|(_, entry, _)| entry.gone_since.is_none())
            };
            let passing = live()
                .filter(|(_, _, instance)| instance.status == Health::Passing)
                .count();
            let folded = !unfold_all && self.collapsed.contains(&key);
            rows.push(Row {
                key,
                depth: 0,
                label: service,
                entry: None,
                group: Some((live().count(), folded)),
                service: Some(ServiceRow::Service { passing }),
            });
            if folded {
                continue;
            }
            for (name, entry, instance) in instances {
                rows.push(Row {
                    key: name.clone(),
                    depth: 1,
                    label: instance.id.clone(),
                    entry: Some(entry),
                    group: None,
                    service: Some(ServiceRow::Instance(Box::new(instance))),
                });
            }
        }
        rows
    }

    /// Re-finds the selected key after the rows changed; keeps the position when it is gone.
    pub(crate) fn sync_selection(&mut self) {
        let (cursor, key) = {
            let rows = self.rows();
            if rows.is_empty() {
                (0, None)
            } else {
                let found = self
                    .selected
                    .as_ref()
                    .and_then(|key| rows.iter().position(|row| &row.key == key));
                let cursor = found.unwrap_or(self.cursor).min(rows.len() - 1);
                (cursor, rows.get(cursor).map(|row| row.key.clone()))
            }
        };
        self.cursor = cursor;
        if key.is_some() {
            self.selected = key;
        }
    }

    fn move_cursor(&mut self, delta: isize) {
        let len = self.rows().len();
        if len == 0 {
            return;
        }
        let cursor = self.cursor.saturating_add_signed(delta).min(len - 1);
        self.select_index(cursor);
    }

    fn select_index(&mut self, index: usize) {
        let key = self.rows().get(index).map(|row| row.key.clone());
        if let Some(key) = key {
            self.cursor = index;
            self.selected = Some(key);
        }
    }

    /// The selected row's key and whether it is a register and a group.
    fn selected_row(&self) -> Option<(String, bool, bool)> {
        self.rows()
            .get(self.cursor)
            .map(|row| (row.key.clone(), row.entry.is_some(), row.group.is_some()))
    }

    /// Handles a key; says what the event loop must do, if anything.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        // A terminal sends Esc as one byte, and Esc followed quickly by a key arrives as
        // Alt+key: while typing, take that as the Esc it was, then the key.
        if key.modifiers.contains(KeyModifiers::ALT)
            && matches!(key.code, KeyCode::Char(_))
            && self.mode != Mode::Normal
        {
            self.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            let mut plain = key;
            plain.modifiers.remove(KeyModifiers::ALT);
            return self.on_key(plain);
        }
        match &mut self.mode {
            Mode::Normal => self.normal_key(key),
            Mode::Filter => {
                match key.code {
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Enter => self.mode = Mode::Normal,
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char('u') if ctrl => self.filter.clear(),
                    KeyCode::Char(c) if !ctrl => self.filter.push(c),
                    KeyCode::Up => self.move_cursor(-1),
                    KeyCode::Down => self.move_cursor(1),
                    _ => {}
                }
                self.sync_selection();
                None
            }
            Mode::Edit { name, input, error } => match key.code {
                KeyCode::Esc => {
                    self.mode = Mode::Normal;
                    None
                }
                KeyCode::Enter => match Json::parse(input.as_bytes()) {
                    Ok(value) => {
                        let name = std::mem::take(name);
                        self.status = Some(Status {
                            text: format!("{name}: sending {value}"),
                            error: false,
                        });
                        self.mode = Mode::Normal;
                        Some(Action::Request { name, value })
                    }
                    Err(reason) => {
                        *error = Some(format!("not valid JSON: {reason}"));
                        None
                    }
                },
                KeyCode::Backspace => {
                    input.pop();
                    *error = None;
                    None
                }
                KeyCode::Char('u') if ctrl => {
                    input.clear();
                    *error = None;
                    None
                }
                KeyCode::Char(c) if !ctrl => {
                    input.push(c);
                    *error = None;
                    None
                }
                _ => None,
            },
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => self.move_cursor(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_cursor(1),
            KeyCode::PageUp => self.move_cursor(-(PAGE as isize)),
            KeyCode::PageDown => self.move_cursor(PAGE as isize),
            KeyCode::Home | KeyCode::Char('g') => self.select_index(0),
            KeyCode::End | KeyCode::Char('G') => {
                let len = self.rows().len();
                self.select_index(len.saturating_sub(1));
            }
            KeyCode::Char('/') => {
                self.mode = Mode::Filter;
                self.status = None;
            }
            KeyCode::Char('t') | KeyCode::Tab => {
                self.view = match self.view {
                    ViewMode::Flat => ViewMode::Tree,
                    ViewMode::Tree => ViewMode::Flat,
                    // Back to the names view it came from, as `s` does.
                    ViewMode::Services => self.names_view,
                };
                self.sync_selection();
            }
            KeyCode::Char('s') => {
                self.view = match self.view {
                    ViewMode::Services => self.names_view,
                    names => {
                        self.names_view = names;
                        ViewMode::Services
                    }
                };
                self.sync_selection();
            }
            KeyCode::Left | KeyCode::Char('h') => self.fold(true),
            KeyCode::Right | KeyCode::Char('l') => self.fold(false),
            KeyCode::Char(' ') => {
                if let Some((key, _, true)) = self.selected_row() {
                    let folded = self.collapsed.contains(&key);
                    self.fold(!folded);
                }
            }
            KeyCode::Char('e') | KeyCode::Enter => match self.selected_row() {
                Some((name, true, _)) => {
                    let input = self
                        .registers
                        .get(&name)
                        .map(|entry| entry.value.to_string())
                        .unwrap_or_default();
                    self.mode = Mode::Edit {
                        name,
                        input,
                        error: None,
                    };
                }
                // On a group, Enter folds or unfolds it.
                Some((group, false, true)) if key.code == KeyCode::Enter => {
                    let folded = self.collapsed.contains(&group);
                    self.fold(!folded);
                }
                _ => {}
            },
            _ => {}
        }
        None
    }

    /// Folds (or unfolds) the selected group in the tree view, or service in the services
    /// view.
    fn fold(&mut self, fold: bool) {
        let separator = match self.view {
            ViewMode::Flat => return,
            ViewMode::Tree => '.',
            // An instance `svc/<service>/<id>` is below its service's row `svc/<service>`.
            ViewMode::Services => '/',
        };
        let Some((key, _, is_group)) = self.selected_row() else {
            return;
        };
        if is_group {
            if fold {
                self.collapsed.insert(key);
            } else {
                self.collapsed.remove(&key);
            }
        } else if fold {
            // On a leaf, Left goes to its group.
            if let Some((parent, _)) = key.rsplit_once(separator) {
                self.selected = Some(parent.to_owned());
            }
        }
        self.sync_selection();
    }
}

/// A node of the name tree: one dotted segment.
#[derive(Debug, Default)]
struct TreeNode {
    children: BTreeMap<String, TreeNode>,
    /// Whether a register has exactly this name.
    register: bool,
}

impl TreeNode {
    /// How many registers are at or below this node.
    fn count(&self) -> usize {
        usize::from(self.register) + self.children.values().map(TreeNode::count).sum::<usize>()
    }

    /// Appends the rows of this node's children, depth first.
    fn flatten<'a>(
        &self,
        app: &'a App,
        prefix: Option<&str>,
        depth: usize,
        unfold_all: bool,
        rows: &mut Vec<Row<'a>>,
    ) {
        for (segment, node) in &self.children {
            let key = match prefix {
                Some(prefix) => format!("{prefix}.{segment}"),
                None => segment.clone(),
            };
            let folded = !unfold_all && app.collapsed.contains(&key);
            let group = (!node.children.is_empty()).then(|| (node.count(), folded));
            rows.push(Row {
                key: key.clone(),
                depth,
                label: segment.clone(),
                entry: if node.register {
                    app.registers.get(&key)
                } else {
                    None
                },
                group,
                service: None,
            });
            if !folded {
                node.flatten(app, Some(&key), depth + 1, unfold_all, rows);
            }
        }
    }
}
