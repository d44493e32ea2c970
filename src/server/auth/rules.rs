//! Rights and name patterns: what one rule of an `--auth` file grants.

use std::fmt;

/// One thing a caller may do to a register, as the routes need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// `GET /consumer`, `/v1/watch`, discovery and Consul catalog/health reads.
    Read,
    /// `PUT` and `DELETE /provider`, discovery and Consul agent registration and checks.
    Provide,
    /// `PUT /consumer`: ask a provider for a change.
    Request,
    /// `GET /provider`: take change requests.
    Take,
    /// Every right on the names it covers; on `*`, also `/metrics`.
    Admin,
}

impl Right {
    /// Every right, in the order the file and messages name them.
    pub const ALL: [Right; 5] = [
        Right::Read,
        Right::Provide,
        Right::Request,
        Right::Take,
        Right::Admin,
    ];

    /// Its name in the `--auth` file and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Provide => "provide",
            Right::Request => "request",
            Right::Take => "take",
            Right::Admin => "admin",
        }
    }

    /// The right named `text`.
    pub fn parse(text: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|right| right.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of rights. `admin` holds every other right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u8);

impl Rights {
    /// Every right, admin included.
    pub const ALL: Rights = Rights(0b1_1111);

    /// Adds `right`.
    pub fn with(self, right: Right) -> Rights {
        Rights(self.0 | right.bit())
    }

    /// Whether this set grants `right` (admin grants all).
    pub fn grants(self, right: Right) -> bool {
        self.0 & (right.bit() | Right::Admin.bit()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Which names a rule covers: a glob where `*` is any run of characters (dots and slashes
/// included) and `?` is one character; without either it is one exact name. `prefix.*` is
/// the usual prefix rule, `*` every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `*`.
    Any,
    /// No wildcard.
    Exact(Box<str>),
    /// One trailing `*` and no other wildcard: the common case, one `starts_with`.
    Prefix(Box<str>),
    /// Anything else, matched by [`glob`].
    Glob(Box<str>),
}

impl Pattern {
    /// Compiles `text` (see the type's docs).
    pub(crate) fn new(text: &str) -> Pattern {
        let wild = |c: char| c == '*' || c == '?';
        if text == "*" {
            Pattern::Any
        } else if !text.contains(wild) {
            Pattern::Exact(text.into())
        } else if let Some(prefix) = text.strip_suffix('*').filter(|p| !p.contains(wild)) {
            Pattern::Prefix(prefix.into())
        } else {
            Pattern::Glob(text.into())
        }
    }

    /// Whether `name` is covered.
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Prefix(prefix) => name.starts_with(&**prefix),
            Pattern::Glob(glob) => glob_match(glob, name),
        }
    }

    /// Whether this covers every name.
    pub(crate) fn is_any(&self) -> bool {
        matches!(self, Pattern::Any)
    }
}

/// Glob matching with `*` and `?` over characters, iterative with one backtrack point
/// (linear in practice, O(pattern × name) at worst: no exponential blow-up on `*a*a*a…`).
fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || name.get(n) == Some(&c) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// One rule: rights on the names a pattern covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) pattern: Pattern,
    pub(crate) rights: Rights,
}

/// A principal's rules, and what they grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// Rights granted on every name (rules with pattern `*`): the fast path.
    everywhere: Rights,
}

impl Rules {
    pub(crate) fn new(rules: Vec<Rule>) -> Self {
        let everywhere = rules
            .iter()
            .filter(|rule| rule.pattern.is_any())
            .fold(Rights::default(), |all, rule| Rights(all.0 | rule.rights.0));
        Self { rules, everywhere }
    }

    /// Whether `right` is granted on `name`.
    pub(crate) fn grants(&self, right: Right, name: &str) -> bool {
        self.everywhere.grants(right)
            || self
                .rules
                .iter()
                .any(|rule| rule.rights.grants(right) && rule.pattern.matches(name))
    }

    /// Whether `right` is granted on every name.
    pub(crate) fn grants_everywhere(&self, right: Right) -> bool {
        self.everywhere.grants(right)
    }

    /// Whether `right` is granted on any name at all.
    pub(crate) fn grants_somewhere(&self, right: Right) -> bool {
        self.rules.iter().any(|rule| rule.rights.grants(right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let cases = [
            ("*", "anything/at.all", true),
            ("*", "", true),
            ("lamp", "lamp", true),
            ("lamp", "lamp2", false),
            ("sensors.*", "sensors.17.temp", true),
            ("sensors.*", "sensors.", true),
            ("sensors.*", "sensor", false),
            ("sensors.*.temp", "sensors.17.temp", true),
            ("sensors.*.temp", "sensors.17.hum", false),
            ("svc/web/*", "svc/web/a1", true),
            ("svc/?eb/*", "svc/web/a1", true),
            ("svc/?eb/*", "svc/eb/a1", false),
            ("*.temp", "kitchen.temp", true),
            (
                "*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("ü*", "über", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                expected,
                "{pattern} vs {name}"
            );
        }
        assert_eq!(Pattern::new("a.*"), Pattern::Prefix("a.".into()));
        assert_eq!(Pattern::new("a"), Pattern::Exact("a".into()));
        assert!(matches!(Pattern::new("a*b"), Pattern::Glob(_)));
    }

    #[test]
    fn admin_grants_every_right_on_its_names() {
        let rules = Rules::new(vec![
            Rule {
                pattern: Pattern::new("ops.*"),
                rights: Rights::default().with(Right::Admin),
            },
            Rule {
                pattern: Pattern::new("*"),
                rights: Rights::default().with(Right::Read),
            },
        ]);
        for right in Right::ALL {
            assert!(rules.grants(right, "ops.x"), "{right}");
        }
        assert!(rules.grants(Right::Read, "other"));
        assert!(!rules.grants(Right::Provide, "other"));
        assert!(rules.grants_everywhere(Right::Read));
        assert!(!rules.grants_everywhere(Right::Admin));
        assert!(rules.grants_somewhere(Right::Take));
        assert!(!Rules::default().grants_somewhere(Right::Read));
    }
}
