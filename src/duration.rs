//! Go's duration grammar: `time.ParseDuration` and `time.Duration.String`.
//!
//! reg's wire contract (`wait` and `ttl`, see the REST spec, section "Durations") speaks Go's
//! duration strings, because the clients that send them are Go programs: they format with
//! `Duration.String()` and pass through whatever their users typed, and the Go server judged
//! those strings with `time.ParseDuration`. To be a drop-in replacement we must accept exactly
//! the strings Go accepts, reject exactly the ones it rejects, and arrive at the same number of
//! nanoseconds — including Go's `float64` rounding of fractional parts (`"0.3333333333333333333h"`
//! is exactly 20 minutes in Go). A general-purpose Rust duration crate has a different grammar,
//! so this module ports Go's algorithm (`src/time/format.go`: `ParseDuration`, `leadingInt`,
//! `leadingFraction`, `Duration.format`) step by step, with checked arithmetic.
//!
//! # Grammar
//! `[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+`, where each number has at least one digit
//! before or after its point (`"1.s"` and `".5s"` are valid, `".s"` is not), or the bare `"0"`
//! (also `"+0"`, `"-0"`). Components may repeat and come in any order (`"1s1h"`). Both micro
//! signs are accepted: U+00B5 (`µ`, what Go prints) and U+03BC (`μ`, Greek mu). The value must
//! fit an `i64` of nanoseconds: `"-9223372036854775808ns"` is valid, one more is not.
//!
//! # Differences from Go
//! * Go adds the components in a `uint64` without checking the addition itself, so two
//!   components of exactly 2^63 ns (`"9223372036854775808ns9223372036854775808ns"`) wrap to 0
//!   and Go returns `0`. We report that as the overflow it is.
//! * Go's error text is `time: invalid duration "…"`, with separate wording for a missing or
//!   unknown unit; ours is always `invalid duration "…"` (quoted the way Go quotes), and long
//!   inputs are cut short. The input here is a `&str`, so Go's invalid-UTF-8 cases cannot occur.

use std::fmt;
use std::time::Duration;

/// Nanoseconds in one second.
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Nanoseconds in one microsecond: the last unit below which `Duration.String` prints `ns`.
const NANOS_PER_MICRO: u64 = 1_000;
/// Nanoseconds in one millisecond.
const NANOS_PER_MILLI: u64 = 1_000_000;
/// Seconds in one minute and minutes in one hour.
const SIXTY: u64 = 60;

/// 2^63: the magnitude of `i64::MIN` ns, the largest magnitude Go's `Duration` can hold. Go
/// accumulates magnitudes in a `uint64` and checks them against this bound.
const MAGNITUDE_LIMIT: u64 = 1 << 63;

/// The largest value [`format_go_duration`] prints: `i64::MAX` ns, about 292 years.
const MAX_NANOS: u64 = i64::MAX as u64;

/// Units and their length in nanoseconds, Go's `unitMap`.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", NANOS_PER_MICRO),
    ("\u{b5}s", NANOS_PER_MICRO),  // U+00B5 micro sign, what Go prints
    ("\u{3bc}s", NANOS_PER_MICRO), // U+03BC Greek small letter mu
    ("ms", NANOS_PER_MILLI),
    ("s", NANOS_PER_SEC),
    ("m", SIXTY * NANOS_PER_SEC),
    ("h", SIXTY * SIXTY * NANOS_PER_SEC),
];

/// How many characters of the input an error keeps, so a huge input makes a small error.
const ERROR_INPUT_CHARS: usize = 64;

/// A string that is not a valid Go duration.
///
/// Displays as `invalid duration "<input>"`, the input quoted as Go quotes it (control and
/// non-ASCII characters as `\xNN` bytes) and cut to its first 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The rejected input, cut to its first [`ERROR_INPUT_CHARS`] characters: enough to
    /// recognise it in a log or a 400 body without copying an attacker-sized string.
    input: Box<str>,
    /// Length of the whole input in bytes, so the message can say it was cut.
    input_len: usize,
}

impl DurationError {
    fn new(input: &str) -> Self {
        let kept = match input.char_indices().nth(ERROR_INPUT_CHARS) {
            Some((cut, _)) => input.get(..cut).unwrap_or(input),
            None => input,
        };
        Self {
            input: kept.into(),
            input_len: input.len(),
        }
    }

    /// The rejected input, cut to its first 64 characters.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Whether [`input`](Self::input) is only the start of what was rejected.
    pub fn is_truncated(&self) -> bool {
        self.input.len() < self.input_len
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid duration ")?;
        write_go_quoted(f, &self.input)?;
        if self.is_truncated() {
            write!(f, " (truncated, {} bytes in all)", self.input_len)?;
        }
        Ok(())
    }
}

impl std::error::Error for DurationError {}

/// Writes `s` in double quotes the way Go's `time.quote` does: `"` and `\` get a backslash,
/// every byte of a control or non-ASCII character becomes `\xNN`.
fn write_go_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for ch in s.chars() {
        if ch < ' ' || !ch.is_ascii() {
            let mut utf8 = [0u8; 4];
            for byte in ch.encode_utf8(&mut utf8).bytes() {
                write!(f, "\\x{byte:02x}")?;
            }
        } else {
            if ch == '"' || ch == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{ch}")?;
        }
    }
    f.write_str("\"")
}

/// Parses a Go duration string (`"300ms"`, `"-1.5h"`, `"2h45m"`) into signed nanoseconds,
/// exactly as Go's `time.ParseDuration` does (see the [module docs](self) for the grammar and
/// the one overflow Go misses).
///
/// # Errors
/// [`DurationError`] for anything outside the grammar: empty input, a missing or unknown unit,
/// spaces, or a value outside `i64` nanoseconds.
pub fn parse_go_duration(input: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::new(input);
    let mut s = input.as_bytes();

    // [-+]?
    let mut negative = false;
    if let Some((&sign @ (b'-' | b'+'), rest)) = s.split_first() {
        negative = sign == b'-';
        s = rest;
    }
    // Go's special case: a bare zero needs no unit.
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }

    // Magnitude so far; never above MAGNITUDE_LIMIT.
    let mut total: u64 = 0;
    while let Some(&first) = s.first() {
        // The next character must be [0-9.].
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }

        // [0-9]*
        let before = s.len();
        let (whole, rest) = leading_int(s).ok_or_else(invalid)?;
        s = rest;
        let has_whole_digits = s.len() != before;

        // (\.[0-9]*)?
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0; // the number is whole + fraction / scale
        let mut has_fraction_digits = false;
        if let Some((b'.', rest)) = s.split_first() {
            let before = rest.len();
            (fraction, scale, s) = leading_fraction(rest);
            has_fraction_digits = s.len() != before;
        }
        if !has_whole_digits && !has_fraction_digits {
            // No digits at all, e.g. ".s" or "-.s".
            return Err(invalid());
        }

        // The unit is everything up to the next number.
        let unit_len = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(invalid());
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit_nanos = UNITS
            .iter()
            .find(|(name, _)| name.as_bytes() == unit)
            .map(|&(_, nanos)| nanos)
            .ok_or_else(invalid)?;

        if whole > MAGNITUDE_LIMIT / unit_nanos {
            return Err(invalid());
        }
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(invalid)?;
        if fraction > 0 {
            // Go computes the fractional nanoseconds in float64 (exact enough for fractions of
            // an hour, the largest unit: at most 3.6e12 ns) and truncates; so do we, to land on
            // the same nanosecond. The cast cannot saturate: the product is below `unit_nanos`.
            let fraction_nanos = (fraction as f64 * (unit_nanos as f64 / scale)) as u64;
            value = value.checked_add(fraction_nanos).ok_or_else(invalid)?;
            if value > MAGNITUDE_LIMIT {
                return Err(invalid());
            }
        }
        // Go's unchecked `d += v` wraps for 2^63 + 2^63; checked_add rejects it.
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > MAGNITUDE_LIMIT {
            return Err(invalid());
        }
    }

    if negative {
        // total <= 2^63 here, so -total fits: 2^63 is exactly i64::MIN.
        0i64.checked_sub_unsigned(total).ok_or_else(invalid)
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// Consumes the leading `[0-9]*` of `s` as an integer, Go's `leadingInt`: `None` once the
/// value passes 2^63, the largest magnitude any component can have.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (digits, rest) = s.split_at(digits);
    let mut x: u64 = 0;
    for &c in digits {
        if x > MAGNITUDE_LIMIT / 10 {
            return None;
        }
        x = x.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        if x > MAGNITUDE_LIMIT {
            return None;
        }
    }
    Some((x, rest))
}

/// Consumes the leading `[0-9]*` of `s` as the digits after a decimal point, Go's
/// `leadingFraction`: returns them as an integer and the power of ten to divide it by. Digits
/// past what a `u64` can hold are consumed but ignored, so this never fails.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (digits, rest) = s.split_at(digits);
    let mut x: u64 = 0;
    let mut scale: f64 = 1.0;
    for &c in digits {
        // Go stops accumulating (but keeps consuming) once another digit could overflow.
        if x > (MAGNITUDE_LIMIT - 1) / 10 {
            break;
        }
        match x
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(c - b'0')))
        {
            Some(y) if y <= MAGNITUDE_LIMIT => {
                x = y;
                scale *= 10.0;
            }
            _ => break,
        }
    }
    (x, scale, rest)
}

/// Formats a duration as Go's `Duration.String()` does: `"0s"`, `"1ns"`, `"2µs"` (U+00B5),
/// `"150ms"`, `"1.5s"`, `"1.000000001s"`, `"1h2m3s"`, `"1h0m0s"`.
///
/// Go durations are `i64` nanoseconds, so anything longer than `i64::MAX` ns (about 292 years)
/// prints as that maximum, `"2562047h47m16.854775807s"`. The output always parses back with
/// [`parse_go_duration`] to the same number of nanoseconds.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = u64::try_from(d.as_nanos()).map_or(MAX_NANOS, |n| n.min(MAX_NANOS));
    let mut out = String::with_capacity(32);
    if nanos == 0 {
        out.push_str("0s");
    } else if nanos < NANOS_PER_MICRO {
        push_decimal(&mut out, nanos, 1);
        out.push_str("ns");
    } else if nanos < NANOS_PER_MILLI {
        push_decimal(&mut out, nanos, NANOS_PER_MICRO);
        out.push_str("\u{b5}s");
    } else if nanos < NANOS_PER_SEC {
        push_decimal(&mut out, nanos, NANOS_PER_MILLI);
        out.push_str("ms");
    } else {
        // Hours are the largest unit: days vary in length.
        let secs = nanos / NANOS_PER_SEC;
        let (hours, minutes) = (secs / (SIXTY * SIXTY), secs / SIXTY % SIXTY);
        if hours > 0 {
            out.push_str(&hours.to_string());
            out.push('h');
        }
        if secs >= SIXTY {
            out.push_str(&minutes.to_string());
            out.push('m');
        }
        push_decimal(&mut out, nanos % (SIXTY * NANOS_PER_SEC), NANOS_PER_SEC);
        out.push('s');
    }
    out
}

/// Appends `value / per_unit` in decimal, with the remainder as a fraction without trailing
/// zeros (and without the point when the fraction is zero), as Go's `fmtFrac` + `fmtInt` do.
/// `per_unit` is a power of ten.
fn push_decimal(out: &mut String, value: u64, per_unit: u64) {
    out.push_str(&(value / per_unit).to_string());
    let fraction = value % per_unit;
    if fraction != 0 {
        // One fewer digit than per_unit has: 1_000 -> 3 fractional digits.
        let width = per_unit.to_string().len() - 1;
        let digits = format!("{fraction:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: i64 = 1;
    const US: i64 = 1_000 * NS;
    const MS: i64 = 1_000 * US;
    const SEC: i64 = 1_000 * MS;
    const MIN: i64 = 60 * SEC;
    const HOUR: i64 = 60 * MIN;

    /// Go's `parseDurationTests` (src/time/time_test.go), valid inputs.
    const GO_VALID: &[(&str, i64)] = &[
        // simple
        ("0", 0),
        ("5s", 5 * SEC),
        ("30s", 30 * SEC),
        ("1478s", 1478 * SEC),
        // sign
        ("-5s", -5 * SEC),
        ("+5s", 5 * SEC),
        ("-0", 0),
        ("+0", 0),
        // decimal
        ("5.0s", 5 * SEC),
        ("5.6s", 5 * SEC + 600 * MS),
        ("5.s", 5 * SEC),
        (".5s", 500 * MS),
        ("1.0s", SEC),
        ("1.00s", SEC),
        ("1.004s", SEC + 4 * MS),
        ("1.0040s", SEC + 4 * MS),
        ("100.00100s", 100 * SEC + MS),
        // different units
        ("10ns", 10 * NS),
        ("11us", 11 * US),
        ("12\u{b5}s", 12 * US),
        ("12\u{3bc}s", 12 * US),
        ("13ms", 13 * MS),
        ("14s", 14 * SEC),
        ("15m", 15 * MIN),
        ("16h", 16 * HOUR),
        // composite durations
        ("3h30m", 3 * HOUR + 30 * MIN),
        ("10.5s4m", 4 * MIN + 10 * SEC + 500 * MS),
        ("-2m3.4s", -(2 * MIN + 3 * SEC + 400 * MS)),
        (
            "1h2m3s4ms5us6ns",
            HOUR + 2 * MIN + 3 * SEC + 4 * MS + 5 * US + 6 * NS,
        ),
        ("39h9m14.425s", 39 * HOUR + 9 * MIN + 14 * SEC + 425 * MS),
        // large value
        ("52763797000ns", 52_763_797_000 * NS),
        // more than 9 digits after the decimal point, golang.org/issue/6617
        ("0.3333333333333333333h", 20 * MIN),
        // 1<<53 + 1 cannot be stored precisely in a float64
        ("9007199254740993ns", (1 << 53) + 1),
        // largest duration an i64 of nanoseconds can represent
        ("9223372036854775807ns", i64::MAX),
        ("9223372036854775.807us", i64::MAX),
        ("9223372036s854ms775us807ns", i64::MAX),
        ("-9223372036854775808ns", i64::MIN),
        ("-9223372036854775.808us", i64::MIN),
        ("-9223372036s854ms775us808ns", i64::MIN),
        // largest negative round-trip value, golang.org/issue/48629
        ("-2562047h47m16.854775808s", i64::MIN),
        // huge string, golang.org/issue/15011
        ("0.100000000000000000000h", 6 * MIN),
        // the first overflow check in leadingFraction
        (
            "0.830103483285477580700h",
            49 * MIN + 48 * SEC + 372_539_827 * NS,
        ),
    ];

    /// Go's `parseDurationErrorTests` with the quoted input Go's message contains. Go's two
    /// invalid-UTF-8 cases (`"\x85\x85"`, `"\xffff"`) cannot be a `&str`, so they are absent.
    const GO_INVALID: &[(&str, &str)] = &[
        ("", r#""""#),
        ("3", r#""3""#),
        ("-", r#""-""#),
        ("s", r#""s""#),
        (".", r#"".""#),
        ("-.", r#""-.""#),
        (".s", r#"".s""#),
        ("+.s", r#""+.s""#),
        ("1d", r#""1d""#),
        ("\u{fffd}", r#""\xef\xbf\xbd""#),
        (
            "\u{fffd} hello \u{fffd} world",
            r#""\xef\xbf\xbd hello \xef\xbf\xbd world""#,
        ),
        // overflow
        ("9223372036854775810ns", r#""9223372036854775810ns""#),
        ("9223372036854775808ns", r#""9223372036854775808ns""#),
        ("-9223372036854775809ns", r#""-9223372036854775809ns""#),
        ("9223372036854776us", r#""9223372036854776us""#),
        ("3000000h", r#""3000000h""#),
        ("9223372036854775.808us", r#""9223372036854775.808us""#),
        (
            "9223372036854ms775us808ns",
            r#""9223372036854ms775us808ns""#,
        ),
    ];

    #[test]
    fn go_valid_table() {
        for &(input, want) in GO_VALID {
            assert_eq!(parse_go_duration(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn go_invalid_table_and_quoting() {
        for &(input, quoted) in GO_INVALID {
            let err = parse_go_duration(input).expect_err(input);
            assert_eq!(err.to_string(), format!("invalid duration {quoted}"));
            assert_eq!(err.input(), input);
            assert!(!err.is_truncated());
        }
    }

    #[test]
    fn three_micro_spellings() {
        for input in ["7us", "7\u{b5}s", "7\u{3bc}s"] {
            assert_eq!(parse_go_duration(input), Ok(7 * US), "input {input:?}");
        }
        // A lone micro sign, the other Greek letter forms, or an upper-case U are not units.
        for input in ["7\u{b5}", "7\u{3bc}", "7\u{39c}s", "7Us", "7\u{b5}S"] {
            assert!(parse_go_duration(input).is_err(), "input {input:?}");
        }
    }

    #[test]
    fn more_grammar() {
        let valid: &[(&str, i64)] = &[
            ("0s", 0),
            ("-0s", 0),
            ("+0.0s", 0),
            ("0.0ns", 0),
            ("000001s", SEC),
            ("1.s", SEC),
            ("-.5s", -500 * MS),
            ("1s1h", HOUR + SEC),
            ("1h1h", 2 * HOUR),
            ("1.5h", HOUR + 30 * MIN),
            ("0.9ns", 0),           // Go truncates sub-nanosecond fractions
            ("1.9999999999ns", NS), // ... all of them
            ("0.0000000001s", 0),   // ten digits: below a nanosecond
            ("2562047h47m16.854775807s", i64::MAX),
        ];
        for &(input, want) in valid {
            assert_eq!(parse_go_duration(input), Ok(want), "input {input:?}");
        }
        let invalid = [
            " 1s",
            "1s ",
            "1 s",
            "1s\n",
            "1S",
            "1H",
            "1sec",
            "1e3s",
            "0x10s",
            "1..5s",
            "1.5.s",
            "00",
            "0.0",
            "+",
            "--1s",
            "+-1s",
            "-+1s",
            "1h-1m",
            "1h+1m",
            "1_000s",
            "1,5s",
            "s1",
            "1s\0",
            "\u{2212}1s",
            "\u{ff11}s",
        ];
        for input in invalid {
            assert!(parse_go_duration(input).is_err(), "input {input:?}");
        }
    }

    #[test]
    fn overflow() {
        let invalid = [
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "2562047h47m16.854775808s",
            "-2562047h47m16.854775809s",
            "2562048h",
            "153722868m",
            "153722867280912930m",
            "9223372036.854775808s",
            "18446744073709551616ns",
            "99999999999999999999999999999ns",
            "-99999999999999999999999999999ns",
            "9223372036854775807ns1ns",
            "1ns9223372036854775807ns",
            // Go wraps 2^63 + 2^63 to 0 and accepts these; we do not.
            "9223372036854775808ns9223372036854775808ns",
            "-9223372036854775808ns9223372036854775808ns",
        ];
        for input in invalid {
            assert!(parse_go_duration(input).is_err(), "input {input:?}");
        }
        // One more component of zero does not hurt at the edges.
        assert_eq!(parse_go_duration("9223372036854775807ns0s"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns0h"), Ok(i64::MIN));
    }

    #[test]
    fn huge_inputs() {
        let long_int = format!("1{}s", "0".repeat(100_000));
        assert!(parse_go_duration(&long_int).is_err());
        // Go consumes any number of fraction digits, dropping those past u64 precision.
        let long_fraction = format!("1.{}s", "5".repeat(100_000));
        assert_eq!(parse_go_duration(&long_fraction), Ok(SEC + 555_555_555));
        // Past ~309 digits the float scale is infinite; the fraction then counts as zero.
        let tiny = format!("1.{}1s", "0".repeat(400));
        assert_eq!(parse_go_duration(&tiny), Ok(SEC));
        let zeros = format!("{}5s", "0".repeat(100_000));
        assert_eq!(parse_go_duration(&zeros), Ok(5 * SEC));
    }

    #[test]
    fn error_message_is_bounded() {
        let input = format!("{}x", "1".repeat(10_000));
        let err = parse_go_duration(&input).expect_err("no unit");
        assert!(err.is_truncated());
        assert_eq!(err.input(), "1".repeat(64));
        assert_eq!(
            err.to_string(),
            format!(
                "invalid duration \"{}\" (truncated, 10001 bytes in all)",
                "1".repeat(64)
            )
        );
        // Truncation counts characters and never splits one.
        let input = "\u{3bc}".repeat(100);
        let err = parse_go_duration(&input).expect_err("no digits");
        assert_eq!(err.input(), "\u{3bc}".repeat(64));
        // Quotes, backslashes and control characters are escaped as Go escapes them.
        let err = parse_go_duration("a\"b\\c\nd\u{7f}").expect_err("no digits");
        assert_eq!(
            err.to_string(),
            r#"invalid duration "a\"b\\c\x0ad"#.to_owned() + "\u{7f}\""
        );
    }

    /// Go's `durationTests` (src/time/time_test.go) for `Duration.String`, non-negative half.
    #[test]
    fn go_format_table() {
        let table: &[(&str, i64)] = &[
            ("0s", 0),
            ("1ns", NS),
            ("1.1\u{b5}s", 1100 * NS),
            ("2.2ms", 2200 * US),
            ("3.3s", 3300 * MS),
            ("4m5s", 4 * MIN + 5 * SEC),
            ("4m5.001s", 4 * MIN + 5001 * MS),
            ("5h6m7.001s", 5 * HOUR + 6 * MIN + 7001 * MS),
            ("8m0.000000001s", 8 * MIN + NS),
            ("2562047h47m16.854775807s", i64::MAX),
            // and the examples reg's own docs use
            ("1.5s", 1500 * MS),
            ("1h2m3s", HOUR + 2 * MIN + 3 * SEC),
            ("150ms", 150 * MS),
            ("1.000000001s", SEC + NS),
            ("2\u{b5}s", 2 * US),
            ("999ns", 999 * NS),
            ("1\u{b5}s", US),
            ("999.999999ms", SEC - NS),
            ("1m0s", MIN),
            ("1h0m0s", HOUR),
            ("1h0m0.5s", HOUR + 500 * MS),
            ("1h1m0s", HOUR + MIN),
            ("59m59.999999999s", HOUR - NS),
        ];
        for &(want, nanos) in table {
            let nanos = u64::try_from(nanos).expect("non-negative");
            assert_eq!(format_go_duration(Duration::from_nanos(nanos)), want);
        }
    }

    #[test]
    fn format_clamps_to_go_max() {
        let max = "2562047h47m16.854775807s";
        assert_eq!(format_go_duration(Duration::from_nanos(MAX_NANOS + 1)), max);
        assert_eq!(format_go_duration(Duration::from_nanos(u64::MAX)), max);
        assert_eq!(format_go_duration(Duration::MAX), max);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn format_then_parse_round_trips(nanos in 0..=i64::MAX) {
            let d = Duration::from_nanos(u64::try_from(nanos).expect("non-negative"));
            let text = format_go_duration(d);
            prop_assert_eq!(parse_go_duration(&text), Ok(nanos));
            prop_assert_eq!(parse_go_duration(&format!("-{text}")), Ok(-nanos));
            prop_assert_eq!(parse_go_duration(&format!("+{text}")), Ok(nanos));
        }

        #[test]
        fn small_durations_round_trip(nanos in 0..=(2 * HOUR)) {
            let d = Duration::from_nanos(u64::try_from(nanos).expect("non-negative"));
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(nanos));
        }

        #[test]
        fn integer_times_unit(n in prop_oneof![any::<u64>(), 0..=10_000u64], unit in 0..UNITS.len()) {
            let (name, unit_nanos) = UNITS[unit];
            let want = n.checked_mul(unit_nanos).and_then(|v| i64::try_from(v).ok());
            prop_assert_eq!(parse_go_duration(&format!("{n}{name}")).ok(), want);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn near_grammar_strings_never_panic(
            s in r"[-+]?([0-9]{0,22}\.?[0-9]{0,25}(ns|us|µs|μs|ms|s|m|h|d|µ| |)){0,4}"
        ) {
            if let Err(err) = parse_go_duration(&s) {
                prop_assert!(err.to_string().starts_with("invalid duration \""));
            }
        }
    }
}
