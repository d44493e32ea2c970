//! `--auth` rules against a model: a rule's pattern covers exactly the names a plain
//! recursive glob matcher says it does (`*` any run, `?` one character), whatever mix of
//! prefix, exact and glob rules a principal holds, and each right only where a rule grants it
//! (or `admin` does).

use proptest::prelude::*;
use reg::server::auth::{Auth, Right};

/// The reference: the textbook recursive glob (exponential at worst; inputs here are short).
fn glob(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

fn pattern() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just('.'),
            Just('*'),
            Just('?'),
            Just('é')
        ],
        0..7,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('.'), Just('é')],
        0..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

const RIGHTS: [Right; 5] = [
    Right::Read,
    Right::Provide,
    Right::Request,
    Right::Take,
    Right::Admin,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rules_grant_exactly_what_the_model_says(
        rules in proptest::collection::vec((pattern(), 0u8..32), 0..4),
        names in proptest::collection::vec(name(), 1..8),
    ) {
        let mut text = String::from("[anonymous]\nrules = [\n");
        for (pattern, bits) in &rules {
            let rights: Vec<String> = RIGHTS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, right)| format!("{:?}", right.as_str()))
                .collect();
            if rights.is_empty() {
                continue;
            }
            text.push_str(&format!("  {{ names = {pattern:?}, rights = [{}] }},\n", rights.join(", ")));
        }
        text.push_str("]\n");
        let auth = Auth::from_toml(&text).unwrap();
        for name in &names {
            let chars: Vec<char> = name.chars().collect();
            for (i, right) in RIGHTS.iter().enumerate() {
                let expected = rules.iter().any(|(pattern, bits)| {
                    let pattern: Vec<char> = pattern.chars().collect();
                    let grants = bits & (1 << i) != 0 || bits & (1 << 4) != 0;
                    grants && glob(&pattern, &chars)
                });
                prop_assert_eq!(
                    auth.anonymous().can(*right, name),
                    expected,
                    "{} on {:?} under {}", right, name, text
                );
            }
        }
    }
}
