//! Validated JSON in canonical form.
//!
//! reg stores every register value and metadata object as a [`Json`]: text that was validated
//! once, on the way in, and rewritten into one *canonical form*. Two values are the same value
//! exactly when their canonical texts are byte-equal, so "did this write change the register?"
//! is a byte compare, and a read copies the stored text into the response without serializing
//! anything again.
//!
//! # The canonical form
//! * **Compact**: no whitespace outside strings.
//! * **Objects** list their keys sorted by the bytes of the decoded (unescaped) UTF-8 key. A key
//!   that appears more than once keeps only its *last* value, which is what Go's
//!   `encoding/json` does when it decodes into a map. So `{"x":1,"y":2}` and `{"y":2,"x":1}`
//!   are the same value, as the wire contract requires.
//! * **Strings** are encoded one way only: `"`, `\` and control characters below U+0020 are
//!   escaped, as `\b \f \n \r \t` where JSON has a short form and otherwise as `\u00XX` in
//!   lower-case hex. Everything else is raw UTF-8, including `/` and all non-ASCII. A `\u`
//!   escape of an unpaired surrogate decodes to U+FFFD, as in Go, and a valid surrogate pair
//!   decodes to its code point. Unlike Go's `json.Marshal`, `<`, `>`, `&`, U+2028 and U+2029
//!   are left raw: this form is for storage and comparison, not for pasting into HTML.
//! * **Numbers** keep exactly the text they were written with, after it is checked against
//!   the JSON number grammar. They are never converted to a float: `1` and `1.0` are different
//!   values, `12345678901234567890123` survives, `1E5` stays `1E5` and `-0` stays `-0`.
//!
//! # What is accepted
//! RFC 8259 JSON: any value at the top level, with optional whitespace (space, tab, CR, LF)
//! around it. Rejected: invalid UTF-8 anywhere, empty input, raw control characters in strings,
//! unknown escapes, anything after the value, and nesting deeper than [`MAX_DEPTH`].
//!
//! # Why a hand-written parser
//! serde_json without `arbitrary_precision` rounds numbers to `f64`, and simd-json does not
//! keep number text. So this is a recursive descent over bytes. Recursion stops at
//! [`MAX_DEPTH`], so the parser is safe on hostile input: it does not panic, its stack depth is
//! bounded, and it allocates O(input).
//!
//! There are two entry points, and they share the lexer:
//! * [`Json::parse`] canonicalizes in one pass straight into a single output string. An
//!   object's members are reordered, in place, only when its keys arrived out of order.
//! * [`parse_tree`] builds a borrowed [`Node`] tree. The HTTP layer walks a request body with
//!   it and canonicalizes each subtree with [`Node::write_canonical`] or [`Node::to_json`],
//!   without parsing again.
//!
//! Both paths accept the same inputs, report the same errors, and give byte-identical output.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, Serializer};

use crate::sync::Arc;

/// The deepest nesting of arrays and objects that is accepted; one level deeper is an error.
///
/// This is the depth serde_json and Go's decoders treat as ordinary, and the bound that keeps
/// recursion (parsing, writing, dropping a [`Node`] tree) far from the end of the stack.
pub const MAX_DEPTH: usize = 128;

// =============================================================================================
// Json
// =============================================================================================

/// A JSON value in canonical form (see the [module docs](self)). Cheap to clone.
///
/// `Eq`, `Hash` and `Ord` compare the canonical text, so equal values compare equal whatever
/// key order or escapes they were written with.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Json(Arc<str>);

impl Json {
    /// Validates `input` and returns its canonical form.
    ///
    /// One pass over the input, writing into one output string sized to the input (the
    /// canonical form is never longer than the input it came from).
    pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
        let mut parser = Parser::new(input)?;
        let mut out = String::with_capacity(input.len());
        parser.canon_value(&mut out)?;
        parser.finish()?;
        Ok(Json(Arc::from(out)))
    }

    /// The JSON `null`.
    pub fn null() -> Json {
        Json(Arc::from("null"))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical text, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }

    /// Whether this is an object (empty or not).
    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }

    /// Whether this is `{}`.
    pub fn is_empty_object(&self) -> bool {
        &*self.0 == "{}"
    }

    /// The canonical form of a serde_json value. This cannot fail: a `Value` is always valid
    /// JSON. Its numbers are written the way serde_json writes them.
    ///
    /// A `Value` nested deeper than [`MAX_DEPTH`] produces text that [`Json::parse`] would
    /// reject. Values that serde_json parsed itself are never that deep.
    pub fn from_value(value: &serde_json::Value) -> Json {
        let mut out = String::new();
        write_value(&mut out, value);
        Json(Arc::from(out))
    }

    /// This value as a serde_json value.
    ///
    /// This is lossy. serde_json (without `arbitrary_precision`) holds a number as `u64`, `i64`
    /// or `f64`. An integer that fits is exact. Any other number is rounded to the nearest
    /// `f64`, and one beyond `f64`'s range (`1e400`) becomes `null`. `-0` becomes `-0.0`.
    pub fn to_value(&self) -> serde_json::Value {
        // The canonical text always parses, and serializing into a `Value` cannot fail.
        parse_tree(self.as_bytes())
            .ok()
            .and_then(|node| serde_json::to_value(&node).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The number, parsed from its text to the nearest `f64`, if this is a number; `None` for
    /// every other type, booleans included. A number beyond `f64`'s range gives ±infinity.
    pub fn as_f64(&self) -> Option<f64> {
        match self.0.as_bytes().first() {
            Some(b'-' | b'0'..=b'9') => self.0.parse().ok(),
            _ => None,
        }
    }

    /// The boolean, if this is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match &*self.0 {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

impl FromStr for Json {
    type Err = JsonError;

    fn from_str(s: &str) -> Result<Json, JsonError> {
        Json::parse(s.as_bytes())
    }
}

impl fmt::Display for Json {
    /// The canonical text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.0)
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Json {
        Json(Arc::from(if value { "true" } else { "false" }))
    }
}

impl From<i64> for Json {
    fn from(value: i64) -> Json {
        Json(Arc::from(value.to_string()))
    }
}

impl From<u64> for Json {
    fn from(value: u64) -> Json {
        Json(Arc::from(value.to_string()))
    }
}

impl From<f64> for Json {
    /// serde_json's shortest round-trip formatting (`1.0`, `1e20`). JSON has no NaN or
    /// infinity, so those become `null`.
    fn from(value: f64) -> Json {
        match serde_json::Number::from_f64(value) {
            Some(number) => Json(Arc::from(number.to_string())),
            None => Json::null(),
        }
    }
}

impl From<&str> for Json {
    /// A JSON *string* holding `value`, escaped canonically.
    fn from(value: &str) -> Json {
        let mut out = String::with_capacity(value.len() + 2);
        write_escaped_str(&mut out, value);
        Json(Arc::from(out))
    }
}

impl From<String> for Json {
    /// A JSON *string* holding `value`, escaped canonically.
    fn from(value: String) -> Json {
        Json::from(value.as_str())
    }
}

impl Serialize for Json {
    /// Walks the canonical text and emits serde primitives, so no `Value` rounds it along the
    /// way. A number goes out as `u64` or `i64` when its text is an integer that fits, and as
    /// the nearest `f64` otherwise. A serializer can only carry that much, so big or
    /// high-precision numbers are rounded here. Use this only for conveniences; the wire
    /// always carries [`Json::as_str`].
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match parse_tree(self.as_bytes()) {
            Ok(node) => node.serialize(serializer),
            Err(error) => Err(S::Error::custom(error)),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    /// Goes through [`serde_json::Value`], then [`Json::from_value`]. The deserializer rounds
    /// numbers as `Value` does, so never use this on wire input; use [`Json::parse`] there.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|value| Json::from_value(&value))
    }
}

// =============================================================================================
// Errors
// =============================================================================================

/// Why input was rejected: what was wrong and the byte offset where the parser found it.
///
/// Display is a lower-case message, e.g. `invalid json at byte 7: expected ',' or '}'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset into the input of the first byte that could not be accepted.
    offset: usize,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    UnexpectedEnd,
    ExpectedValue,
    ExpectedKey,
    ExpectedColon,
    ExpectedCommaOrBrace,
    ExpectedCommaOrBracket,
    InvalidLiteral,
    InvalidNumber,
    InvalidEscape,
    InvalidUnicodeEscape,
    ControlCharacter,
    InvalidUtf8,
    TrailingCharacters,
    TooDeep,
}

impl JsonError {
    fn new(offset: usize, kind: ErrorKind) -> JsonError {
        JsonError { offset, kind }
    }

    /// Byte offset into the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self.kind {
            ErrorKind::UnexpectedEnd => "unexpected end of input",
            ErrorKind::ExpectedValue => "expected a value",
            ErrorKind::ExpectedKey => "expected a string key",
            ErrorKind::ExpectedColon => "expected ':'",
            ErrorKind::ExpectedCommaOrBrace => "expected ',' or '}'",
            ErrorKind::ExpectedCommaOrBracket => "expected ',' or ']'",
            ErrorKind::InvalidLiteral => "invalid literal (expected true, false or null)",
            ErrorKind::InvalidNumber => "invalid number",
            ErrorKind::InvalidEscape => "invalid escape in string",
            ErrorKind::InvalidUnicodeEscape => {
                "invalid \\u escape in string (expected 4 hex digits)"
            }
            ErrorKind::ControlCharacter => "unescaped control character in string",
            ErrorKind::InvalidUtf8 => "invalid utf-8",
            ErrorKind::TrailingCharacters => "unexpected characters after the value",
            ErrorKind::TooDeep => "nesting deeper than 128 levels",
        };
        write!(f, "invalid json at byte {}: {message}", self.offset)
    }
}

impl std::error::Error for JsonError {}

// =============================================================================================
// The tree
// =============================================================================================

/// A parsed JSON value that borrows its strings and numbers from the input.
///
/// Trees from [`parse_tree`] are valid and canonical in shape: numbers are valid number
/// text, and every object's members are sorted by decoded key with duplicates removed (last
/// wins). [`Node::write_canonical`] and [`Node::get`] rely on that. A tree built by hand
/// that breaks it will produce non-canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, exactly as written.
    Number(&'a str),
    /// A string.
    String(Str<'a>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object: members sorted by decoded key bytes, one per key (the last one written).
    Object(Vec<(Str<'a>, Node<'a>)>),
}

/// A JSON string as it appears in the input: the text between the quotes, escapes as written.
///
/// Only the parser makes these, so the escapes are always valid. Equality and ordering
/// compare the *decoded* strings by their UTF-8 bytes: `"\u0061"` equals `"a"`.
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    /// The text between the quotes, escapes as written.
    raw: &'a str,
    /// Whether `raw` holds a backslash. Without one, `raw` is already both the decoded string
    /// and its canonical encoding (raw `"`, `\` and control characters are rejected).
    has_escapes: bool,
}

/// Parses `input` into a borrowed tree. Accepts and rejects exactly what [`Json::parse`]
/// does, with the same errors.
pub fn parse_tree(input: &[u8]) -> Result<Node<'_>, JsonError> {
    let mut parser = Parser::new(input)?;
    let node = parser.node()?;
    parser.finish()?;
    Ok(node)
}

impl<'a> Str<'a> {
    /// The string's value, with escapes decoded. Borrowed when it has no escapes.
    pub fn decoded(&self) -> Cow<'a, str> {
        if self.has_escapes {
            let mut out = String::with_capacity(self.raw.len());
            decode_into(self.raw, &mut out, false);
            Cow::Owned(out)
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// The text between the quotes, escapes as written.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the raw text holds any escape.
    pub fn has_escapes(&self) -> bool {
        self.has_escapes
    }

    /// Appends the canonical encoding of this string, quotes included.
    pub fn write_canonical(&self, out: &mut String) {
        out.push('"');
        if self.has_escapes {
            decode_into(self.raw, out, true);
        } else {
            out.push_str(self.raw);
        }
        out.push('"');
    }

    /// The decoded characters. Comparing `char`s in order is comparing their UTF-8 bytes.
    fn chars(&self) -> DecodedChars<'a> {
        DecodedChars { rest: self.raw }
    }

    /// Compares the decoded string with `key`.
    fn cmp_str(&self, key: &str) -> Ordering {
        if self.has_escapes {
            self.chars().cmp(key.chars())
        } else {
            self.raw.as_bytes().cmp(key.as_bytes())
        }
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Str<'_> {}

impl PartialOrd for Str<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.has_escapes || other.has_escapes {
            self.chars().cmp(other.chars())
        } else {
            self.raw.as_bytes().cmp(other.raw.as_bytes())
        }
    }
}

impl Node<'_> {
    /// Appends this value's canonical text to `out`.
    pub fn write_canonical(&self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(true) => out.push_str("true"),
            Node::Bool(false) => out.push_str("false"),
            Node::Number(text) => out.push_str(text),
            Node::String(s) => s.write_canonical(out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            Node::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    key.write_canonical(out);
                    out.push(':');
                    value.write_canonical(out);
                }
                out.push('}');
            }
        }
    }

    /// This value in canonical form.
    pub fn to_json(&self) -> Json {
        let mut out = String::new();
        self.write_canonical(&mut out);
        Json(Arc::from(out))
    }

    /// The member named `key` (compared with decoded keys), if this is an object that has
    /// one. A binary search, so it needs the sorted members that [`parse_tree`] produces.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Node::Object(members) => members
                .binary_search_by(|(k, _)| k.cmp_str(key))
                .ok()
                .and_then(|i| members.get(i))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The JSON type's name, for error messages: `null`, `boolean`, `number`, `string`,
    /// `array` or `object`.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::String(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }
}

impl Serialize for Node<'_> {
    /// As for [`Json`]'s `Serialize`: numbers go out as `u64`/`i64` when they are integers
    /// that fit, else as the nearest `f64`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(text) => {
                if !text.contains(['.', 'e', 'E']) && *text != "-0" {
                    if let Ok(n) = text.parse::<u64>() {
                        return serializer.serialize_u64(n);
                    }
                    if let Ok(n) = text.parse::<i64>() {
                        return serializer.serialize_i64(n);
                    }
                }
                match text.parse::<f64>() {
                    Ok(n) => serializer.serialize_f64(n),
                    Err(error) => Err(S::Error::custom(error)),
                }
            }
            Node::String(s) => serializer.serialize_str(&s.decoded()),
            Node::Array(items) => serializer.collect_seq(items),
            Node::Object(members) => {
                serializer.collect_map(members.iter().map(|(key, value)| (key.decoded(), value)))
            }
        }
    }
}

// =============================================================================================
// The parser
// =============================================================================================

/// A recursive-descent parser over the input bytes. [`Parser::node`] builds a tree, and
/// [`Parser::canon_value`] writes canonical text directly. Both use the same lexing and
/// structure helpers, so they accept and reject the same inputs at the same offsets.
struct Parser<'a> {
    /// The input, already checked to be UTF-8, so number and string slices are `&str`.
    src: &'a str,
    /// `src` as bytes, for scanning.
    bytes: &'a [u8],
    /// The next byte to look at.
    pos: usize,
    /// How many arrays and objects enclose `pos`; at most [`MAX_DEPTH`].
    depth: usize,
    /// The canonical path's stack of object members. Each open object owns the entries from
    /// its own base index up, so nested objects share one allocation.
    members: Vec<Member<'a>>,
}

/// An object member already written to the canonical output: `out[start..end]` is its
/// `"key":value` text.
#[derive(Clone, Copy)]
struct Member<'a> {
    key: Str<'a>,
    start: usize,
    end: usize,
}

/// What starts at a value position.
enum Token<'a> {
    /// `{`, not yet consumed.
    Object,
    /// `[`, not yet consumed.
    Array,
    /// A whole scalar, consumed. Never `Node::Array` or `Node::Object`.
    Scalar(Node<'a>),
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Result<Parser<'a>, JsonError> {
        // One fast pass up front lets every later slice be a `&str` with no unsafe code.
        let src = std::str::from_utf8(input)
            .map_err(|e| JsonError::new(e.valid_up_to(), ErrorKind::InvalidUtf8))?;
        Ok(Parser {
            src,
            bytes: input,
            pos: 0,
            depth: 0,
            members: Vec::new(),
        })
    }

    fn error(&self, kind: ErrorKind) -> JsonError {
        JsonError::new(self.pos, kind)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// After the top-level value: only whitespace may follow.
    fn finish(&mut self) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error(ErrorKind::TrailingCharacters)),
        }
    }

    /// `src[start..end]`. Both ends always lie on ASCII delimiters, so this cannot fail in
    /// practice; if it did, the error would be reported instead of a panic.
    fn slice(&self, start: usize, end: usize) -> Result<&'a str, JsonError> {
        self.src
            .get(start..end)
            .ok_or(JsonError::new(start, ErrorKind::InvalidUtf8))
    }

    // ---- structure, shared by both paths --------------------------------------------------

    /// Skips whitespace and reads what starts the next value: a container opener (left for
    /// the caller) or a whole scalar.
    fn value_start(&mut self) -> Result<Token<'a>, JsonError> {
        self.skip_ws();
        let Some(byte) = self.peek() else {
            return Err(self.error(ErrorKind::UnexpectedEnd));
        };
        let node = match byte {
            b'{' => return Ok(Token::Object),
            b'[' => return Ok(Token::Array),
            b'"' => Node::String(self.scan_string()?),
            b'-' | b'0'..=b'9' => Node::Number(self.scan_number()?),
            b't' => self.literal(b"true", Node::Bool(true))?,
            b'f' => self.literal(b"false", Node::Bool(false))?,
            b'n' => self.literal(b"null", Node::Null)?,
            b'+' | b'.' => return Err(self.error(ErrorKind::InvalidNumber)),
            _ => return Err(self.error(ErrorKind::ExpectedValue)),
        };
        Ok(Token::Scalar(node))
    }

    fn literal(&mut self, text: &[u8], node: Node<'a>) -> Result<Node<'a>, JsonError> {
        match self.bytes.get(self.pos..self.pos + text.len()) {
            Some(found) if found == text => {
                self.pos += text.len();
                Ok(node)
            }
            _ => Err(self.error(ErrorKind::InvalidLiteral)),
        }
    }

    /// Consumes a `[` or `{` at `pos`, one level deeper.
    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(ErrorKind::TooDeep));
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    /// Right after `enter`: consumes `close` and returns true if the container is empty.
    fn close_if_empty(&mut self, close: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            self.depth -= 1;
            true
        } else {
            false
        }
    }

    /// After an element or member: consumes `,` (returns true: another follows) or `close`
    /// (returns false: the container is done).
    fn next_or_close(&mut self, close: u8, otherwise: ErrorKind) -> Result<bool, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(_) => Err(self.error(otherwise)),
            None => Err(self.error(ErrorKind::UnexpectedEnd)),
        }
    }

    /// Reads `"key"` and the `:` after it.
    fn member_key(&mut self) -> Result<Str<'a>, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return Err(self.error(ErrorKind::ExpectedKey)),
            None => return Err(self.error(ErrorKind::UnexpectedEnd)),
        }
        let key = self.scan_string()?;
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok(key)
            }
            Some(_) => Err(self.error(ErrorKind::ExpectedColon)),
            None => Err(self.error(ErrorKind::UnexpectedEnd)),
        }
    }

    // ---- the tree path ---------------------------------------------------------------------

    fn node(&mut self) -> Result<Node<'a>, JsonError> {
        match self.value_start()? {
            Token::Scalar(node) => Ok(node),
            Token::Array => {
                self.enter()?;
                let mut items = Vec::new();
                if !self.close_if_empty(b']') {
                    loop {
                        items.push(self.node()?);
                        if !self.next_or_close(b']', ErrorKind::ExpectedCommaOrBracket)? {
                            break;
                        }
                    }
                }
                Ok(Node::Array(items))
            }
            Token::Object => {
                self.enter()?;
                let mut members = Vec::new();
                if !self.close_if_empty(b'}') {
                    loop {
                        let key = self.member_key()?;
                        members.push((key, self.node()?));
                        if !self.next_or_close(b'}', ErrorKind::ExpectedCommaOrBrace)? {
                            break;
                        }
                    }
                }
                if !strictly_sorted(&members) {
                    sort_last_wins(&mut members);
                }
                Ok(Node::Object(members))
            }
        }
    }

    // ---- the canonical path ----------------------------------------------------------------

    fn canon_value(&mut self, out: &mut String) -> Result<(), JsonError> {
        match self.value_start()? {
            Token::Scalar(node) => {
                node.write_canonical(out);
                Ok(())
            }
            Token::Array => {
                self.enter()?;
                out.push('[');
                if !self.close_if_empty(b']') {
                    loop {
                        self.canon_value(out)?;
                        if !self.next_or_close(b']', ErrorKind::ExpectedCommaOrBracket)? {
                            break;
                        }
                        out.push(',');
                    }
                }
                out.push(']');
                Ok(())
            }
            Token::Object => self.canon_object(out),
        }
    }

    /// Writes members as they come, remembering where each one's text lies. If the keys were
    /// not already strictly ascending, the member texts are reassembled in order, keeping the
    /// last of each duplicate key.
    fn canon_object(&mut self, out: &mut String) -> Result<(), JsonError> {
        let open = out.len();
        self.enter()?;
        out.push('{');
        if !self.close_if_empty(b'}') {
            let base = self.members.len();
            loop {
                let key = self.member_key()?;
                let start = out.len();
                key.write_canonical(out);
                out.push(':');
                self.canon_value(out)?;
                self.members.push(Member {
                    key,
                    start,
                    end: out.len(),
                });
                if !self.next_or_close(b'}', ErrorKind::ExpectedCommaOrBrace)? {
                    break;
                }
                out.push(',');
            }
            let in_order = self.members.get(base..).is_some_and(strictly_sorted);
            if !in_order {
                let mut members = self.members.split_off(base);
                sort_last_wins(&mut members);
                let mut sorted = String::with_capacity(out.len().saturating_sub(open));
                for (i, member) in members.iter().enumerate() {
                    if i > 0 {
                        sorted.push(',');
                    }
                    // The offsets were taken from `out` at ASCII delimiters.
                    if let Some(text) = out.get(member.start..member.end) {
                        sorted.push_str(text);
                    }
                }
                out.truncate(open + 1);
                out.push_str(&sorted);
            }
            self.members.truncate(base);
        }
        out.push('}');
        Ok(())
    }

    // ---- lexing ----------------------------------------------------------------------------

    /// Scans the string whose opening quote is at `pos`, checking its escapes and rejecting
    /// raw control characters. UTF-8 was checked when the parser was made.
    fn scan_string(&mut self) -> Result<Str<'a>, JsonError> {
        let start = self.pos + 1;
        let mut i = start;
        let mut has_escapes = false;
        loop {
            // Skip eight ordinary bytes at a time.
            while let Some(chunk) = self.bytes.get(i..i + 8) {
                let Ok(word) = <[u8; 8]>::try_from(chunk) else {
                    break;
                };
                if word_has_special(u64::from_le_bytes(word)) {
                    break;
                }
                i += 8;
            }
            // Then one at a time up to the special byte.
            let byte = loop {
                match self.bytes.get(i) {
                    Some(&b) if is_special(b) => break b,
                    Some(_) => i += 1,
                    None => return Err(JsonError::new(i, ErrorKind::UnexpectedEnd)),
                }
            };
            match byte {
                b'"' => break,
                b'\\' => {
                    has_escapes = true;
                    i = self.check_escape(i)?;
                }
                _ => return Err(JsonError::new(i, ErrorKind::ControlCharacter)),
            }
        }
        let raw = self.slice(start, i)?;
        self.pos = i + 1;
        Ok(Str { raw, has_escapes })
    }

    /// Checks the escape whose backslash is at `i` and returns the offset just past it.
    fn check_escape(&self, i: usize) -> Result<usize, JsonError> {
        match self.bytes.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => match hex4(self.bytes.get(i + 2..i + 6)) {
                Some(_) => Ok(i + 6),
                None => Err(JsonError::new(i, ErrorKind::InvalidUnicodeEscape)),
            },
            Some(_) => Err(JsonError::new(i, ErrorKind::InvalidEscape)),
            None => Err(JsonError::new(i + 1, ErrorKind::UnexpectedEnd)),
        }
    }

    /// Scans a number at `pos`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn scan_number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error(ErrorKind::InvalidNumber));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.error(ErrorKind::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.require_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        self.slice(start, self.pos)
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.skip_digits();
                Ok(())
            }
            _ => Err(self.error(ErrorKind::InvalidNumber)),
        }
    }
}

/// A byte that ends a run of ordinary string bytes: `"`, `\` or a control character.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Whether any of the eight bytes in `word` [`is_special`]. These are the exact SWAR tests
/// for "some byte is zero" (after xor) and "some byte is below 0x20".
fn word_has_special(word: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (below(quote, 1) | below(backslash, 1) | below(word, 0x20)) & HIGHS != 0
}

/// The value of four hex digits, if `digits` is exactly that.
fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        char::from(d).to_digit(16).map(|v| acc * 16 + v)
    })
}

// =============================================================================================
// Object keys: sorting and comparing
// =============================================================================================

/// Something with an object key: a tree member or a written canonical member.
trait Keyed<'a> {
    fn key(&self) -> &Str<'a>;
}

impl<'a> Keyed<'a> for (Str<'a>, Node<'a>) {
    fn key(&self) -> &Str<'a> {
        &self.0
    }
}

impl<'a> Keyed<'a> for Member<'a> {
    fn key(&self) -> &Str<'a> {
        &self.key
    }
}

/// Whether the keys are strictly ascending: already canonical, nothing to do (the common
/// case: most writers emit sorted keys and none repeats one).
fn strictly_sorted<'a, T: Keyed<'a>>(members: &[T]) -> bool {
    members
        .windows(2)
        .all(|pair| matches!(pair, [a, b] if a.key() < b.key()))
}

/// Sorts by key and keeps only the last-written member of each key, as Go does.
fn sort_last_wins<'a, T: Keyed<'a>>(members: &mut Vec<T>) {
    // After reversing, a stable sort puts the last-written member first among equal keys, and
    // `dedup_by` keeps the first of each run.
    members.reverse();
    members.sort_by(|a, b| a.key().cmp(b.key()));
    members.dedup_by(|later, kept| later.key() == kept.key());
}

// =============================================================================================
// String decoding and encoding
// =============================================================================================

/// The replacement for an unpaired surrogate escape, as in Go.
const REPLACEMENT: char = '\u{FFFD}';

/// Decodes the escape that starts `s` (at its backslash) and returns the character and the
/// rest of `s` after the escape. The parser has checked the escape; if something else is
/// passed, it yields U+FFFD and still moves forward.
fn decode_escape(s: &str) -> (char, &str) {
    let after = |n: usize| s.get(n..).unwrap_or("");
    let c = match s.as_bytes().get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return decode_unicode_escape(s),
        _ => return (REPLACEMENT, after(1)),
    };
    (c, after(2))
}

/// Decodes `\uXXXX` at the start of `s`, pairing a high surrogate with an immediately
/// following `\u` low surrogate. Any other surrogate becomes U+FFFD, and whatever follows it
/// is left to decode on its own, as Go's `encoding/json` does.
fn decode_unicode_escape(s: &str) -> (char, &str) {
    let Some(unit) = hex4(s.as_bytes().get(2..6)) else {
        return (REPLACEMENT, s.get(2..).unwrap_or(""));
    };
    let rest = s.get(6..).unwrap_or("");
    match unit {
        0xD800..=0xDBFF => {
            let next = rest.as_bytes();
            if next.get(..2) == Some(b"\\u") {
                if let Some(low @ 0xDC00..=0xDFFF) = hex4(next.get(2..6)) {
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    let c = char::from_u32(code).unwrap_or(REPLACEMENT);
                    return (c, rest.get(6..).unwrap_or(""));
                }
            }
            (REPLACEMENT, rest)
        }
        0xDC00..=0xDFFF => (REPLACEMENT, rest),
        _ => (char::from_u32(unit).unwrap_or(REPLACEMENT), rest),
    }
}

/// Appends the decoded `raw` string text to `out`. With `escape`, each decoded character is
/// written canonically instead. Text between escapes is copied as is: the parser rejected raw
/// `"` and control characters, so it is canonical already.
fn decode_into(raw: &str, out: &mut String, escape: bool) {
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        let Some((plain, escaped)) = rest.split_at_checked(at) else {
            break;
        };
        out.push_str(plain);
        let (c, after) = decode_escape(escaped);
        if escape {
            push_escaped_char(out, c);
        } else {
            out.push(c);
        }
        rest = after;
    }
    out.push_str(rest);
}

/// The characters of a string's raw text, with escapes decoded.
struct DecodedChars<'a> {
    rest: &'a str,
}

impl Iterator for DecodedChars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let mut chars = self.rest.chars();
        match chars.next()? {
            '\\' => {
                let (c, rest) = decode_escape(self.rest);
                self.rest = rest;
                Some(c)
            }
            c => {
                self.rest = chars.as_str();
                Some(c)
            }
        }
    }
}

/// Appends `c` in canonical string encoding.
fn push_escaped_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x20 => {
            let code = u32::from(c);
            out.push_str("\\u00");
            out.push(char::from_digit(code >> 4, 16).unwrap_or('0'));
            out.push(char::from_digit(code & 0xF, 16).unwrap_or('0'));
        }
        c => out.push(c),
    }
}

/// Appends `s` as a canonical JSON string, quotes included.
fn write_escaped_str(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    while let Some(at) = rest.bytes().position(is_special) {
        // `at` is an ASCII byte, so on a character boundary.
        let Some((plain, tail)) = rest.split_at_checked(at) else {
            break;
        };
        out.push_str(plain);
        let mut chars = tail.chars();
        if let Some(c) = chars.next() {
            push_escaped_char(out, c);
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
    out.push('"');
}

/// Appends the canonical text of a serde_json value.
fn write_value(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // Writing to a `String` cannot fail.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_escaped_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map is a `BTreeMap` (sorted by key bytes), unless some crate in
            // the build turns on `preserve_order`. Sort anyway; it is a check when sorted.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            if !members
                .windows(2)
                .all(|pair| matches!(pair, [a, b] if a.0 < b.0))
            {
                members.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_escaped_str(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Canonicalizes `input` both ways and checks that the two paths agree.
    fn parse(input: &[u8]) -> Result<Json, JsonError> {
        let direct = Json::parse(input);
        let via_tree = parse_tree(input).map(|node| node.to_json());
        assert_eq!(
            direct,
            via_tree,
            "paths disagree on {:?}",
            String::from_utf8_lossy(input)
        );
        direct
    }

    fn canon(input: &str) -> String {
        match parse(input.as_bytes()) {
            Ok(json) => json.as_str().to_owned(),
            Err(error) => panic!("{input:?} rejected: {error}"),
        }
    }

    fn reject(input: &[u8]) -> JsonError {
        match parse(input) {
            Ok(json) => panic!("{:?} accepted as {json:?}", String::from_utf8_lossy(input)),
            Err(error) => error,
        }
    }

    fn message(input: &str) -> String {
        reject(input.as_bytes()).to_string()
    }

    #[test]
    fn keys_are_sorted_and_last_duplicate_wins() {
        assert_eq!(canon(r#"{"b":1,"a":2,"c":3}"#), r#"{"a":2,"b":1,"c":3}"#);
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(
            canon(r#"{"a":1,"b":0,"a":3,"a":{"z":1,"y":[{"d":1,"c":2}]}}"#),
            r#"{"a":{"y":[{"c":2,"d":1}],"z":1},"b":0}"#
        );
        // A duplicate whose earlier value was the larger object: spans shrink correctly.
        assert_eq!(canon(r#"{"k":{"x":[1,2,3],"w":0},"k":7}"#), r#"{"k":7}"#);
        // Keys compare decoded: an escaped duplicate is a duplicate.
        assert_eq!(canon(r#"{"a":1,"\u0061":2}"#), r#"{"a":2}"#);
        assert_eq!(canon(r#"{"\u0062":1,"a":2}"#), r#"{"a":2,"b":1}"#);
        // Sorted by decoded bytes, not escaped text: "\n" (0x0a) sorts before "!" (0x21).
        assert_eq!(canon(r#"{"!":2,"\n":1}"#), r#"{"\n":1,"!":2}"#);
        assert_eq!(canon(r#"{"\n":1,"!":2}"#), r#"{"\n":1,"!":2}"#);
        // UTF-8 byte order, not UTF-16 order: U+FFFF (ef bf bf) before U+1F600 (f0 9f 98 80).
        assert_eq!(
            canon(r#"{"\ud83d\ude00":1,"\uffff":2}"#),
            "{\"\u{ffff}\":2,\"😀\":1}"
        );
        // Two lone surrogates both decode to U+FFFD: the same key.
        assert_eq!(canon(r#"{"\ud800":1,"\udbff":2}"#), "{\"\u{fffd}\":2}");
        // A prefix sorts first.
        assert_eq!(canon(r#"{"ab":1,"a":2,"":3}"#), r#"{"":3,"a":2,"ab":1}"#);
        assert_eq!(canon(r#"{}"#), "{}");
        assert_eq!(canon(r#"{ }"#), "{}");
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = parse(br#"{"x":1,"y":2}"#);
        let b = parse(br#"{"y":2,"x":1}"#);
        assert!(a.is_ok());
        assert_eq!(a, b);
        assert_ne!(parse(br#"{"x":1,"y":2}"#), parse(br#"{"x":1,"y":3}"#));
    }

    #[test]
    fn number_text_is_kept() {
        for text in [
            "0",
            "-0",
            "1",
            "1.0",
            "-1.5",
            "12345678901234567890123",
            "-12345678901234567890123.000000000000000000001",
            "1E5",
            "1e5",
            "1e+5",
            "1E-05",
            "0.0000",
            "1e400",
            "0e0",
            "-0.0e-0",
        ] {
            assert_eq!(canon(text), text);
            assert_eq!(canon(&format!("[{text}]")), format!("[{text}]"));
            assert_eq!(
                canon(&format!("{{\"n\":{text}}}")),
                format!("{{\"n\":{text}}}")
            );
        }
        assert_ne!(parse(b"1"), parse(b"1.0"));
        assert_ne!(parse(b"0"), parse(b"-0"));
        assert_ne!(parse(b"1E5"), parse(b"1e5"));
    }

    #[test]
    fn invalid_numbers_are_rejected() {
        for (text, offset) in [
            ("01", 1),
            ("-01", 2),
            ("00", 1),
            ("1.", 2),
            ("1.e5", 2),
            (".5", 0),
            ("+1", 0),
            ("1e", 2),
            ("1e+", 3),
            ("1E-", 3),
            ("-", 1),
            ("--1", 1),
            ("-a", 1),
            ("[-]", 2),
            ("{\"a\":01}", 6),
        ] {
            let error = reject(text.as_bytes());
            assert_eq!(error.offset(), offset, "{text}");
            assert!(
                error.to_string().ends_with("invalid number"),
                "{text}: {error}"
            );
        }
        for text in ["0x10", "1.5.2", "Infinity", "-Infinity", "NaN", "1 2", "١"] {
            reject(text.as_bytes());
        }
    }

    #[test]
    fn strings_are_reencoded_canonically() {
        assert_eq!(canon(r#""\u0041""#), r#""A""#);
        assert_eq!(canon(r#""\/""#), r#""/""#);
        assert_eq!(canon(r#""a/b""#), r#""a/b""#);
        assert_eq!(canon(r#""\b\f\n\r\t""#), r#""\b\f\n\r\t""#);
        assert_eq!(
            canon(r#""\u0008\u000C\u000a\u000D\u0009""#),
            r#""\b\f\n\r\t""#
        );
        assert_eq!(canon(r#""\u0000\u001F\u001b""#), r#""\u0000\u001f\u001b""#);
        assert_eq!(canon(r#""\"\\""#), r#""\"\\""#);
        assert_eq!(canon(r#""\u0022\u005C""#), r#""\"\\""#);
        assert_eq!(canon(r#""\u00e9\u00E9é""#), "\"ééé\"");
        assert_eq!(canon(r#""\u2028\u003c\u007f""#), "\"\u{2028}<\u{7f}\"");
        assert_eq!(canon(r#""\ud83d\ude00\uD83D\uDE00""#), "\"😀😀\"");
        assert_eq!(
            canon("\"plain ascii and ünïcödé 😀\""),
            "\"plain ascii and ünïcödé 😀\""
        );
        assert_eq!(canon(r#""""#), r#""""#);
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(canon(r#""\ud800""#), "\"\u{fffd}\"");
        assert_eq!(canon(r#""\udc00""#), "\"\u{fffd}\"");
        assert_eq!(canon(r#""\ud800x""#), "\"\u{fffd}x\"");
        assert_eq!(canon(r#""\ud800\u0041""#), "\"\u{fffd}A\"");
        // A high surrogate then a pair: the first is lone, the pair decodes.
        assert_eq!(canon(r#""\ud800\ud800\udc00""#), "\"\u{fffd}\u{10000}\"");
        // Low then high: both lone.
        assert_eq!(canon(r#""\udc00\ud800""#), "\"\u{fffd}\u{fffd}\"");
        assert_eq!(canon(r#""\udbff\udfff""#), "\"\u{10ffff}\"");
    }

    #[test]
    fn bad_strings_are_rejected() {
        for (text, offset) in [
            (r#""\x""#, 1),
            (r#""ab\u12""#, 3),
            (r#""\u12g4""#, 1),
            (r#""\U0041""#, 1),
            ("\"a\nb\"", 2),
            ("\"a\tb\"", 2),
            ("\"\u{0}\"", 1),
            ("\"abc", 4),
            ("\"abc\\", 5),
            ("\"", 1),
        ] {
            assert_eq!(reject(text.as_bytes()).offset(), offset, "{text:?}");
        }
        assert!(message(r#""\x""#).ends_with("invalid escape in string"));
        assert!(message("\"a\nb\"").ends_with("unescaped control character in string"));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        for (input, offset) in [
            (&b"\"\xff\""[..], 1),
            (b"\"ab\xc3\"", 3),
            (b"\"\xc0\xaf\"", 1),
            (b"\"\xed\xa0\x80\"", 1),
            (b"[1,\xff]", 3),
            (b"\xef\xbb\xbf1", 0), // a BOM is valid UTF-8 but not whitespace
            (b"1 \xff", 2),
        ] {
            let error = reject(input);
            assert_eq!(error.offset(), offset, "{input:?}");
        }
        assert_eq!(
            message("\"\u{0}"),
            "invalid json at byte 1: unescaped control character in string"
        );
        assert!(reject(b"\"\xff\"").to_string().ends_with("invalid utf-8"));
    }

    #[test]
    fn trailing_characters_are_rejected() {
        for (text, offset) in [
            ("1 2", 2),
            ("{}x", 2),
            ("nullx", 4),
            ("truefalse", 4),
            ("[]]", 2),
            (r#""a""b""#, 3),
            ("1,", 1),
            ("{} {}", 3),
        ] {
            let error = reject(text.as_bytes());
            assert_eq!(error.offset(), offset, "{text}");
            assert!(error
                .to_string()
                .ends_with("unexpected characters after the value"));
        }
    }

    #[test]
    fn nesting_depth_is_limited() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(canon(&nested(MAX_DEPTH)), nested(MAX_DEPTH));
        let error = reject(nested(MAX_DEPTH + 1).as_bytes());
        assert_eq!(error.offset(), MAX_DEPTH);
        assert_eq!(
            error.to_string(),
            "invalid json at byte 128: nesting deeper than 128 levels"
        );

        let objects = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(canon(&objects(MAX_DEPTH)), objects(MAX_DEPTH));
        reject(objects(MAX_DEPTH + 1).as_bytes());

        // Siblings do not add up: depth is nesting, not count.
        let wide = format!("[{}]", vec![nested(MAX_DEPTH - 1); 3].join(","));
        assert_eq!(canon(&wide), wide);

        // Hostile depth is an error, not a stack overflow.
        for (hostile, offset) in [
            ("[".repeat(1_000_000), 128),
            ("{\"a\":".repeat(200_000), 5 * 128),
            ("[{\"\":".repeat(100_000), 5 * 64),
        ] {
            let error = reject(hostile.as_bytes());
            assert_eq!(error.offset(), offset);
            assert!(error
                .to_string()
                .ends_with("nesting deeper than 128 levels"));
        }
        // A deep canonical value still converts and serializes.
        let deep = Json::parse(nested(MAX_DEPTH).as_bytes()).expect("valid");
        assert!(deep.to_value().is_array());
        assert_eq!(
            serde_json::to_string(&deep).expect("serializes"),
            nested(MAX_DEPTH)
        );
    }

    #[test]
    fn whitespace_is_allowed_around_tokens_only() {
        assert_eq!(
            canon(" \t\r\n{ \"a\" :\n[ 1 , 2\t] ,\"b\":\"x y\" } \n"),
            r#"{"a":[1,2],"b":"x y"}"#
        );
        assert_eq!(canon("  null  "), "null");
        assert_eq!(canon("[ ]"), "[]");
        // Form feed, vertical tab and NBSP are not JSON whitespace.
        assert_eq!(reject(b"\x0c1").offset(), 0);
        assert_eq!(reject(b"1\x0b").offset(), 1);
        assert_eq!(reject("\u{a0}1".as_bytes()).offset(), 0);
    }

    #[test]
    fn empty_input_is_rejected() {
        assert_eq!(
            message(""),
            "invalid json at byte 0: unexpected end of input"
        );
        assert_eq!(
            message(" \n\t"),
            "invalid json at byte 3: unexpected end of input"
        );
    }

    #[test]
    fn error_messages_name_the_problem_and_offset() {
        for (text, expected) in [
            (
                r#"{"a":1 "b":2}"#,
                "invalid json at byte 7: expected ',' or '}'",
            ),
            ("[1 2]", "invalid json at byte 3: expected ',' or ']'"),
            (r#"{"a" 1}"#, "invalid json at byte 5: expected ':'"),
            ("{1:2}", "invalid json at byte 1: expected a string key"),
            (
                r#"{"a":1,}"#,
                "invalid json at byte 7: expected a string key",
            ),
            ("[1,]", "invalid json at byte 3: expected a value"),
            ("[,1]", "invalid json at byte 1: expected a value"),
            ("{\"a\":}", "invalid json at byte 5: expected a value"),
            (
                "tru",
                "invalid json at byte 0: invalid literal (expected true, false or null)",
            ),
            (
                "nulL",
                "invalid json at byte 0: invalid literal (expected true, false or null)",
            ),
            ("[1", "invalid json at byte 2: unexpected end of input"),
            ("{\"a\"", "invalid json at byte 4: unexpected end of input"),
            (
                "{\"a\":1",
                "invalid json at byte 6: unexpected end of input",
            ),
            ("'a'", "invalid json at byte 0: expected a value"),
            (
                r#""\u00zz""#,
                "invalid json at byte 1: invalid \\u escape in string (expected 4 hex digits)",
            ),
        ] {
            assert_eq!(message(text), expected, "{text}");
        }
        let error: Box<dyn std::error::Error> = Box::new(reject(b"x"));
        assert_eq!(
            error.to_string(),
            "invalid json at byte 0: expected a value"
        );
    }

    #[test]
    fn accessors() {
        let json = |s: &str| Json::parse(s.as_bytes()).expect("valid");
        assert!(json(" null ").is_null());
        assert_eq!(Json::null(), json("null"));
        assert!(Json::null().is_null());
        assert!(!json("\"null\"").is_null());
        assert!(json("{\"a\":1}").is_object());
        assert!(!json("{\"a\":1}").is_empty_object());
        assert!(json("{ }").is_empty_object());
        assert!(!json("[]").is_object());
        assert_eq!(json("true").as_bool(), Some(true));
        assert_eq!(json("false").as_bool(), Some(false));
        assert_eq!(json("1").as_bool(), None);
        assert_eq!(json("1.5E2").as_f64(), Some(150.0));
        assert_eq!(json("-0").as_f64().map(f64::is_sign_negative), Some(true));
        assert_eq!(json("1e400").as_f64(), Some(f64::INFINITY));
        assert_eq!(json("true").as_f64(), None);
        assert_eq!(json("\"1\"").as_f64(), None);
        assert_eq!(json("[1]").as_bytes(), b"[1]");
        assert_eq!(
            "{\"b\":1,\"a\":2}".parse::<Json>(),
            Ok(json("{\"a\":2,\"b\":1}"))
        );
        assert!("{".parse::<Json>().is_err());
        assert_eq!(json("{\"b\":[1, 2]}").to_string(), r#"{"b":[1,2]}"#);
        assert_eq!(format!("{:?}", json("{\"a\":1}")), r#"Json({"a":1})"#);
    }

    #[test]
    fn from_conversions() {
        assert_eq!(Json::from(true).as_str(), "true");
        assert_eq!(Json::from(false).as_str(), "false");
        assert_eq!(Json::from(-3i64).as_str(), "-3");
        assert_eq!(Json::from(u64::MAX).as_str(), "18446744073709551615");
        assert_eq!(Json::from(1.5f64).as_str(), "1.5");
        assert_eq!(Json::from(1.0f64).as_str(), "1.0");
        assert_eq!(Json::from(f64::NAN), Json::null());
        assert_eq!(Json::from(f64::INFINITY), Json::null());
        for f in [1e20, 1e-7, -2.5e300, 5e-324, f64::MAX, 0.1, -0.0] {
            let json = Json::from(f);
            assert_eq!(Json::parse(json.as_bytes()), Ok(json.clone()));
            assert_eq!(json.as_f64(), Some(f));
        }
        let s = Json::from("a\"b\\c\n\u{1}\u{1f}é/😀\u{7f}");
        assert_eq!(s.as_str(), "\"a\\\"b\\\\c\\n\\u0001\\u001fé/😀\u{7f}\"");
        assert_eq!(Json::parse(s.as_bytes()), Ok(s.clone()));
        assert_eq!(Json::from(String::from("x")).as_str(), "\"x\"");
        assert_eq!(Json::from(""), Json::parse(b"\"\"").expect("valid"));
    }

    #[test]
    fn serde_conversions() {
        let json =
            Json::parse(br#"{"b":[1,-2,1.5,"x\n",null,true],"a":12345678901234567890123,"c":-0}"#)
                .expect("valid");
        let value = json.to_value();
        assert_eq!(
            value["b"],
            serde_json::json!([1, -2, 1.5, "x\n", null, true])
        );
        assert_eq!(value["a"].as_f64(), Some(12345678901234567890123.0));
        assert_eq!(value["c"].as_f64().map(f64::is_sign_negative), Some(true));
        assert_eq!(serde_json::to_value(&json).expect("serializes"), value);
        assert_eq!(
            serde_json::to_string(&json).expect("serializes"),
            r#"{"a":1.2345678901234568e+22,"b":[1,-2,1.5,"x\n",null,true],"c":-0.0}"#
        );
        assert_eq!(
            Json::parse(b"18446744073709551615")
                .expect("valid")
                .to_value(),
            Value::from(u64::MAX)
        );
        assert_eq!(
            Json::parse(b"-9223372036854775808")
                .expect("valid")
                .to_value(),
            Value::from(i64::MIN)
        );
        assert_eq!(
            Json::parse(b"1e400").expect("valid").to_value(),
            Value::Null
        );

        let back: Json =
            serde_json::from_str(r#" {"b":1, "a":{"d":[],"c":"\u0041"}} "#).expect("deserializes");
        assert_eq!(back.as_str(), r#"{"a":{"c":"A","d":[]},"b":1}"#);
        assert_eq!(
            Json::from_value(&serde_json::json!({"y": [1, 2.5, "é"], "x": null})).as_str(),
            r#"{"x":null,"y":[1,2.5,"é"]}"#
        );
    }

    #[test]
    fn tree_walks_and_canonicalizes_subtrees() {
        let body = br#" {"registers": {"t": {"value": {"z": 1, "a": [1.0, "\u0041"]}, "ttl": "5s"},
                                       "a\u0062": {"value": null}}} "#;
        let tree = parse_tree(body).expect("valid");
        assert_eq!(tree.kind(), "object");
        let registers = tree.get("registers").expect("registers");
        let Node::Object(entries) = registers else {
            panic!("registers is {}", registers.kind());
        };
        let names: Vec<Cow<'_, str>> = entries.iter().map(|(k, _)| k.decoded()).collect();
        assert_eq!(names, ["ab", "t"]);
        assert!(matches!(
            entries.first().map(|(k, _)| k.decoded()),
            Some(Cow::Owned(_))
        ));
        assert!(matches!(
            entries.get(1).map(|(k, _)| k.decoded()),
            Some(Cow::Borrowed("t"))
        ));
        assert_eq!(
            registers.get("ab").and_then(|r| r.get("value")),
            Some(&Node::Null)
        );
        let t = registers.get("t").expect("t");
        let value = t.get("value").expect("value");
        assert_eq!(value.to_json().as_str(), r#"{"a":[1.0,"A"],"z":1}"#);
        let mut out = String::from("prefix:");
        value.write_canonical(&mut out);
        assert_eq!(out, r#"prefix:{"a":[1.0,"A"],"z":1}"#);
        let Some(Node::String(ttl)) = t.get("ttl") else {
            panic!("ttl is not a string");
        };
        assert_eq!(
            (ttl.raw(), ttl.has_escapes(), ttl.decoded()),
            ("5s", false, Cow::Borrowed("5s"))
        );
        assert_eq!(t.get("missing"), None);
        assert_eq!(value.get("a").map(Node::kind), Some("array"));
        assert_eq!(Node::Null.get("a"), None);
        for (text, kind) in [
            ("null", "null"),
            ("true", "boolean"),
            ("-1", "number"),
            ("\"\"", "string"),
            ("[]", "array"),
            ("{}", "object"),
        ] {
            assert_eq!(parse_tree(text.as_bytes()).map(|n| n.kind()), Ok(kind));
        }
        // Lookup by decoded key finds escaped keys, and escaped keys sort by decoded bytes.
        let tree = parse_tree(br#"{"\u00e9":1,"\n":2,"z":3}"#).expect("valid");
        assert_eq!(tree.get("é"), Some(&Node::Number("1")));
        assert_eq!(tree.get("\n"), Some(&Node::Number("2")));
        assert_eq!(tree.get("z"), Some(&Node::Number("3")));
    }

    #[test]
    fn swar_scan_matches_bytewise() {
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                if let Some(slot) = word.get_mut(at) {
                    *slot = byte;
                }
                assert_eq!(
                    word_has_special(u64::from_le_bytes(word)),
                    is_special(byte),
                    "{byte} at {at}"
                );
            }
        }
        // Long strings cross many words; specials at every position are found.
        for len in 0..40 {
            for at in 0..len {
                let mut s = "x".repeat(len);
                s.replace_range(at..=at, "\n");
                assert_eq!(reject(format!("\"{s}\"").as_bytes()).offset(), at + 1);
                s.replace_range(at..=at, "\"");
                assert_eq!(reject(format!("\"{s}\"").as_bytes()).offset(), at + 2);
            }
            assert_eq!(
                canon(&format!("\"{}\\n\"", "é".repeat(len))),
                format!("\"{}\\n\"", "é".repeat(len))
            );
        }
    }

    // ---- property tests ----------------------------------------------------------------------

    /// serde_json parses floats fast but not always correctly rounded (without its
    /// `float_roundtrip` feature); keep the floats whose text it reads back exactly.
    fn arb_float() -> impl Strategy<Value = Value> {
        any::<f64>().prop_filter_map("finite and round-trips through serde_json", |f| {
            let number = serde_json::Number::from_f64(f)?;
            let back: f64 = serde_json::from_str(&number.to_string()).ok()?;
            (back == f).then_some(Value::Number(number))
        })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            arb_float(),
            any::<String>().prop_map(Value::String),
            "[a-c\"\\\\\n\u{1}é😀]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-d\n\"é😀]{0,3}|.*", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A tiny deterministic generator for shuffling and whitespace.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn whitespace(&mut self, out: &mut String) {
            for _ in 0..self.below(3) {
                out.push([' ', '\t', '\n', '\r'][self.below(4)]);
            }
        }
    }

    /// Writes a string with a random mix of raw characters and escapes (UTF-16 `\u` escapes
    /// for anything, short escapes where they exist).
    fn render_str(s: &str, rng: &mut Rng, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let mut units = [0u16; 2];
            match (c, rng.below(3)) {
                ('"' | '\\' | '\u{0}'..='\u{1f}', 0) | (_, 1) => {
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                ('/', 2) => out.push_str("\\/"),
                ('"' | '\\' | '\u{0}'..='\u{1f}', _) => push_escaped_char(out, c),
                _ => out.push(c),
            }
        }
        out.push('"');
    }

    /// Writes `value` with shuffled keys, random whitespace and escapes, and decoy duplicate
    /// keys that a later member overrides.
    fn render(value: &Value, rng: &mut Rng, out: &mut String) {
        rng.whitespace(out);
        match value {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, rng, out);
                }
                rng.whitespace(out);
                out.push(']');
            }
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                for i in (1..members.len()).rev() {
                    members.swap(i, rng.below(i + 1));
                }
                out.push('{');
                for (i, (key, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if rng.below(4) == 0 {
                        rng.whitespace(out);
                        render_str(key, rng, out);
                        out.push_str(":[\"decoy\", {\"z\":1, \"a\":2}],");
                    }
                    rng.whitespace(out);
                    render_str(key, rng, out);
                    rng.whitespace(out);
                    out.push(':');
                    render(item, rng, out);
                }
                rng.whitespace(out);
                out.push('}');
            }
            Value::String(s) => render_str(s, rng, out),
            other => out.push_str(&other.to_string()),
        }
        rng.whitespace(out);
    }

    /// JSON-shaped text from a small vocabulary: mostly valid, with keys that collide once
    /// decoded (`"a"` and `"\u0061"`, two lone surrogates) and the odd invalid token.
    fn arb_jsonish() -> impl Strategy<Value = Vec<u8>> {
        let scalar = prop_oneof![
            9 => prop::sample::select(vec![
                "0", "-0", "1.50", "1E+3", "-2e-2", "12345678901234567890123", "true", "false",
                "null", "\"a\"", "\"\\u0061\"", "\"\\ud800\"", "\"\\ud83d\\ude00\"",
                "\"\\n\\/\\\"\"", "\"é\"", "\"\\u0000\"",
            ]),
            1 => prop::sample::select(vec![
                "01", "1.", "-", "\"x", "\"\\u12\"", "tru", "\"\u{1}\"", "]", "}", ",", "",
            ]),
        ];
        let key = prop::sample::select(vec![
            "\"a\"",
            "\"\\u0061\"",
            "\"b\"",
            "\"\"",
            "\"!\"",
            "\"\\n\"",
            "\"é\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "\"\\udbff\"",
            "\"\\ud83d\\ude00\"",
            "\"\\uffff\"",
        ]);
        let space = prop::sample::select(vec!["", "", " ", "\n\t", "\r\n "]);
        let value = scalar
            .prop_map(str::to_owned)
            .prop_recursive(5, 64, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec((inner.clone(), space.clone()), 0..6).prop_map(|items| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(v, s)| format!("{s}{v}{s}"))
                            .collect();
                        format!("[{}]", items.join(","))
                    }),
                    prop::collection::vec((key.clone(), inner, space.clone()), 0..6).prop_map(
                        |members| {
                            let members: Vec<String> = members
                                .into_iter()
                                .map(|(k, v, s)| format!("{s}{k}{s}:{v}"))
                                .collect();
                            format!("{{{}}}", members.join(","))
                        }
                    ),
                ]
            });
        value.prop_map(String::into_bytes)
    }

    /// Valid JSON text with one byte replaced, inserted or removed.
    fn arb_mutant() -> impl Strategy<Value = Vec<u8>> {
        (
            arb_value(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            0..3u8,
        )
            .prop_map(|(value, at, byte, how)| {
                let mut bytes = value.to_string().into_bytes();
                let at = at.index(bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => {
                        if let Some(slot) = bytes.get_mut(at) {
                            *slot = byte;
                        }
                    }
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.push(byte),
                }
                bytes
            })
    }

    /// Anything accepted is canonical: parsing it again gives the same bytes.
    fn check_idempotent(input: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(json) = parse(input) {
            prop_assert_eq!(parse(json.as_bytes()), Ok(json.clone()));
            prop_assert!(json.as_str().len() <= input.len());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn from_value_round_trips(value in arb_value()) {
            let json = Json::from_value(&value);
            let back: Value = serde_json::from_str(json.as_str()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &value);
            prop_assert_eq!(parse(json.as_bytes()), Ok(json.clone()));
            // serde_json's own text canonicalizes to the same thing.
            prop_assert_eq!(parse(value.to_string().as_bytes()), Ok(json.clone()));
            prop_assert_eq!(parse(serde_json::to_string_pretty(&value).map_err(|e| TestCaseError::fail(e.to_string()))?.as_bytes()), Ok(json.clone()));
            prop_assert_eq!(json.to_value(), value.clone());
            prop_assert_eq!(serde_json::to_value(&json).map_err(|e| TestCaseError::fail(e.to_string()))?, value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..64)) {
            check_idempotent(&input)?;
        }

        #[test]
        fn jsonish_text_is_handled(input in arb_jsonish()) {
            check_idempotent(&input)?;
        }

        #[test]
        fn mutated_json_is_handled(input in arb_mutant()) {
            check_idempotent(&input)?;
        }

        #[test]
        fn permutations_canonicalize_identically(value in arb_value(), seed in any::<u64>()) {
            let mut rng = Rng(seed | 1);
            let mut text = String::new();
            render(&value, &mut rng, &mut text);
            prop_assert_eq!(parse(text.as_bytes()), Ok(Json::from_value(&value)), "rendered as {}", text);
        }
    }
}
