//! The on-disk record format, shared by log segments and snapshots.
//!
//! A file is an 8-byte magic (`REGLOG` or `REGSNP`, then `\0` and the format version, 1)
//! followed by frames. A frame is `len: u32 LE | crc: u32 LE | payload[len]`, where `crc` is
//! the CRC-32C of the payload and `len` is at least 1 and at most [`MAX_PAYLOAD`]. A payload
//! is a type byte and fixed-order fields: integers `u64 LE`, strings `u32 LE length + bytes`
//! (UTF-8; JSON in its canonical text), an absent optional string as length `u32::MAX`:
//!
//! | type | record | fields |
//! | --- | --- | --- |
//! | 1 | set | revision, created, ttl_ms, deadline (wall ms since the Unix epoch), name, value, metadata? |
//! | 2 | delete | revision, name |
//! | 3 | expire | revision, name |
//! | 4 | change request | id, wall ms when made, name, value |
//! | 6 | change request, with who asked | id, wall ms when made, name, value, identity, request id |
//! | 5 | request taken | id, name (taken by a provider, or dropped for its age) |
//! | 16 | snapshot begin | revision (the log's cut), wall ms when taken, history horizon |
//! | 17 | snapshot end | registers, removals, requests (counts, so a snapshot is known whole) |
//!
//! Register records are in revision order. Request records are ordered by their ids instead
//! (they are not changes to registers and take no revision): a request applies unless a
//! newer one for its name, or its own or a newer take, is on record.
//!
//! A reader that meets an unknown type refuses the file (a newer format), never skips it.

use crate::json::Json;
use crate::store::restore::Saved;
use crate::store::{EventKind, Origin, Register, Revision};
use crate::sync::Arc;

/// The largest payload a frame may carry: a register is at most the 1 MiB body limit plus its
/// name, and larger limits are configurable; 64 MiB is far beyond any, and small enough that a
/// garbage length is recognised as one.
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// Bytes before a frame's payload.
pub(crate) const FRAME_HEAD: usize = 8;

/// The first 8 bytes of a log segment.
pub(crate) const LOG_MAGIC: &[u8; 8] = b"REGLOG\0\x01";
/// The first 8 bytes of a snapshot.
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"REGSNP\0\x01";

const SET: u8 = 1;
const DELETE: u8 = 2;
const EXPIRE: u8 = 3;
const REQUEST: u8 = 4;
const TAKEN: u8 = 5;
const REQUEST_BY: u8 = 6;
const SNAPSHOT_BEGIN: u8 = 16;
const SNAPSHOT_END: u8 = 17;

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A register created or changed, with its deadline in wall ms.
    Set { saved: Saved, deadline_wall_ms: u64 },
    /// A register deleted or expired.
    Removed {
        name: Arc<str>,
        revision: Revision,
        kind: EventKind,
    },
    /// A change request made.
    Request {
        name: Arc<str>,
        id: u64,
        value: Json,
        at_wall_ms: u64,
        /// Who asked, when the request said (type 6).
        origin: Option<Origin>,
    },
    /// A change request taken (or dropped for its age).
    Taken { name: Arc<str>, id: u64 },
    /// A snapshot's first record.
    SnapshotBegin {
        revision: Revision,
        wall_ms: u64,
        horizon: Revision,
    },
    /// A snapshot's last record.
    SnapshotEnd {
        registers: u64,
        removals: u64,
        requests: u64,
    },
}

/// Appends a frame holding what `payload` writes, its checksum left for [`seal`] to fill in
/// (so a sink under the commit lock does not spend its time on checksums).
fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    payload(out);
    let len = u32::try_from(out.len() - start - FRAME_HEAD).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Fills in the checksum of every frame in `frames` (whole frames, as the `put_` functions
/// wrote them).
pub(crate) fn seal(frames: &mut [u8]) {
    let mut at = 0;
    while let Some(head) = frames.get(at..at + FRAME_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = frames.get(at + FRAME_HEAD..at + FRAME_HEAD + len) else {
            break;
        };
        let crc = super::crc::crc32c(payload);
        frames[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += FRAME_HEAD + len;
    }
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX - 1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends an optional string: `None` as the length `u32::MAX`.
pub(crate) fn put_optional_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => put_str(out, text),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Appends a set record: `register` with its TTL and its deadline in wall ms.
pub(crate) fn put_set(out: &mut Vec<u8>, register: &Register, ttl_ms: u64, deadline_wall_ms: u64) {
    frame(out, |out| {
        out.push(SET);
        put_u64(out, register.revision());
        put_u64(out, register.created());
        put_u64(out, ttl_ms);
        put_u64(out, deadline_wall_ms);
        put_str(out, register.name());
        put_str(out, register.value().as_str());
        put_optional_str(out, register.metadata().map(Json::as_str));
    });
}

/// Appends a delete or expire record.
pub(crate) fn put_removed(out: &mut Vec<u8>, name: &str, revision: Revision, kind: EventKind) {
    frame(out, |out| {
        out.push(if kind == EventKind::Expire {
            EXPIRE
        } else {
            DELETE
        });
        put_u64(out, revision);
        put_str(out, name);
    });
}

/// Appends a change request record.
pub(crate) fn put_request(
    out: &mut Vec<u8>,
    name: &str,
    id: u64,
    value: &Json,
    at_wall_ms: u64,
    origin: Option<&Origin>,
) {
    frame(out, |out| {
        out.push(if origin.is_some() {
            REQUEST_BY
        } else {
            REQUEST
        });
        put_u64(out, id);
        put_u64(out, at_wall_ms);
        put_str(out, name);
        put_str(out, value.as_str());
        if let Some(origin) = origin {
            put_str(out, origin.identity());
            put_str(out, origin.request_id());
        }
    });
}

/// Appends a request-taken record.
pub(crate) fn put_taken(out: &mut Vec<u8>, name: &str, id: u64) {
    frame(out, |out| {
        out.push(TAKEN);
        put_u64(out, id);
        put_str(out, name);
    });
}

/// Appends a snapshot's first record.
pub(crate) fn put_snapshot_begin(
    out: &mut Vec<u8>,
    revision: Revision,
    wall_ms: u64,
    horizon: Revision,
) {
    frame(out, |out| {
        out.push(SNAPSHOT_BEGIN);
        put_u64(out, revision);
        put_u64(out, wall_ms);
        put_u64(out, horizon);
    });
}

/// Appends a snapshot's last record.
pub(crate) fn put_snapshot_end(out: &mut Vec<u8>, registers: u64, removals: u64, requests: u64) {
    frame(out, |out| {
        out.push(SNAPSHOT_END);
        put_u64(out, registers);
        put_u64(out, removals);
        put_u64(out, requests);
    });
}

/// What is wrong with the bytes at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The file ends inside the frame (a torn write, or the end of the file).
    Truncated,
    /// A length that no frame has.
    Length(u64),
    /// The payload does not match its checksum.
    Checksum,
    /// The checksum matches but the payload does not decode: a format this build does not
    /// know, or a bug.
    Undecodable(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Truncated => f.write_str("the file ends inside a record"),
            Bad::Length(len) => write!(f, "a record length of {len} bytes"),
            Bad::Checksum => f.write_str("a checksum mismatch"),
            Bad::Undecodable(why) => write!(f, "a record that does not decode ({why})"),
        }
    }
}

/// The frame at the start of `bytes`: its payload and the frame's whole length.
pub(crate) fn next_frame(bytes: &[u8]) -> Result<(&[u8], usize), Bad> {
    let Some(head) = bytes.get(..FRAME_HEAD) else {
        return Err(Bad::Truncated);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(Bad::Length(len as u64));
    }
    let Some(payload) = bytes.get(FRAME_HEAD..FRAME_HEAD + len) else {
        return Err(Bad::Truncated);
    };
    if super::crc::crc32c(payload) != crc {
        return Err(Bad::Checksum);
    }
    Ok((payload, FRAME_HEAD + len))
}

fn parse_json(text: &str) -> Result<Json, Bad> {
    Json::parse(text.as_bytes()).map_err(|e| Bad::Undecodable(format!("bad JSON: {e}")))
}

/// Reads fields off a payload.
pub(crate) struct Fields<'a>(pub(crate) &'a [u8]);

impl<'a> Fields<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.0.len() < n {
            return Err(Bad::Undecodable("a field runs past the record".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Bad> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    pub(crate) fn len(&mut self) -> Result<u32, Bad> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, Bad> {
        let len = self.len()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Bad::Undecodable("a string that is not UTF-8".into()))
    }

    pub(crate) fn json(&mut self) -> Result<Json, Bad> {
        parse_json(self.str()?)
    }

    /// A string written by [`put_optional_str`].
    pub(crate) fn optional_str(&mut self) -> Result<Option<&'a str>, Bad> {
        let mut peek = Fields(self.0);
        if peek.len()? == u32::MAX {
            self.0 = peek.0;
            return Ok(None);
        }
        self.str().map(Some)
    }

    pub(crate) fn optional_json(&mut self) -> Result<Option<Json>, Bad> {
        self.optional_str()?.map(parse_json).transpose()
    }

    pub(crate) fn end(&self) -> Result<(), Bad> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Bad::Undecodable("bytes left after the last field".into()))
        }
    }
}

/// Decodes a payload.
pub(crate) fn decode(payload: &[u8]) -> Result<Record, Bad> {
    let Some((&kind, rest)) = payload.split_first() else {
        return Err(Bad::Undecodable("an empty record".into()));
    };
    let mut fields = Fields(rest);
    let record = match kind {
        SET => {
            let revision = fields.u64()?;
            let created = fields.u64()?;
            let ttl_ms = fields.u64()?;
            let deadline_wall_ms = fields.u64()?;
            let name = Arc::from(fields.str()?);
            let value = fields.json()?;
            let metadata = fields.optional_json()?;
            Record::Set {
                saved: Saved {
                    name,
                    value,
                    metadata,
                    revision,
                    created,
                    ttl_ms,
                },
                deadline_wall_ms,
            }
        }
        DELETE | EXPIRE => {
            let revision = fields.u64()?;
            let name = Arc::from(fields.str()?);
            let kind = if kind == EXPIRE {
                EventKind::Expire
            } else {
                EventKind::Delete
            };
            Record::Removed {
                name,
                revision,
                kind,
            }
        }
        REQUEST | REQUEST_BY => {
            let id = fields.u64()?;
            let at_wall_ms = fields.u64()?;
            let name = Arc::from(fields.str()?);
            let value = fields.json()?;
            let origin = if kind == REQUEST_BY {
                let identity = fields.str()?;
                Some(Origin::new(identity, fields.str()?, None))
            } else {
                None
            };
            Record::Request {
                name,
                id,
                value,
                at_wall_ms,
                origin,
            }
        }
        TAKEN => {
            let id = fields.u64()?;
            let name = Arc::from(fields.str()?);
            Record::Taken { name, id }
        }
        SNAPSHOT_BEGIN => Record::SnapshotBegin {
            revision: fields.u64()?,
            wall_ms: fields.u64()?,
            horizon: fields.u64()?,
        },
        SNAPSHOT_END => Record::SnapshotEnd {
            registers: fields.u64()?,
            removals: fields.u64()?,
            requests: fields.u64()?,
        },
        other => return Err(Bad::Undecodable(format!("unknown record type {other}"))),
    };
    fields.end()?;
    Ok(record)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        let kitchen = Register {
            name: Arc::from("kitchen.temp"),
            value: json(r#"{"c":21.5}"#),
            metadata: Some(json(r#"{"unit":"C"}"#)),
            revision: 7,
            created: 3,
        };
        put_set(&mut out, &kitchen, 30_000, 1_767_225_630_000);
        let b = Register {
            name: Arc::from("b"),
            value: json("null"),
            metadata: None,
            revision: 8,
            created: 8,
        };
        put_set(&mut out, &b, 1, 2);
        put_removed(&mut out, "b", 9, EventKind::Delete);
        put_removed(&mut out, "kitchen.temp", 10, EventKind::Expire);
        put_request(&mut out, "door", 3, &json("\"open\""), 99, None);
        let asker = Origin::new("ops", "r-9", None);
        put_request(&mut out, "fan", 4, &json("true"), 100, Some(&asker));
        put_taken(&mut out, "door", 3);
        put_snapshot_begin(&mut out, 10, 5, 2);
        put_snapshot_end(&mut out, 2, 1, 1);
        assert!(next_frame(&out).is_err(), "not sealed yet");
        seal(&mut out);
        let mut records = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (payload, len) = next_frame(&out[at..]).unwrap();
            records.push(decode(payload).unwrap());
            at += len;
        }
        assert_eq!(records.len(), 9);
        assert_eq!(
            records[0],
            Record::Set {
                saved: Saved {
                    name: Arc::from("kitchen.temp"),
                    value: json(r#"{"c":21.5}"#),
                    metadata: Some(json(r#"{"unit":"C"}"#)),
                    revision: 7,
                    created: 3,
                    ttl_ms: 30_000,
                },
                deadline_wall_ms: 1_767_225_630_000,
            }
        );
        assert!(matches!(&records[1], Record::Set { saved, .. } if saved.metadata.is_none()));
        assert_eq!(
            records[3],
            Record::Removed {
                name: Arc::from("kitchen.temp"),
                revision: 10,
                kind: EventKind::Expire
            }
        );
        assert_eq!(
            records[4],
            Record::Request {
                name: Arc::from("door"),
                id: 3,
                value: json("\"open\""),
                at_wall_ms: 99,
                origin: None,
            }
        );
        assert_eq!(
            records[5],
            Record::Request {
                name: Arc::from("fan"),
                id: 4,
                value: json("true"),
                at_wall_ms: 100,
                origin: Some(Origin::new("ops", "r-9", None)),
            }
        );
        assert_eq!(
            records[6],
            Record::Taken {
                name: Arc::from("door"),
                id: 3
            }
        );
        assert_eq!(
            records[8],
            Record::SnapshotEnd {
                registers: 2,
                removals: 1,
                requests: 1
            }
        );
    }

    #[test]
    fn damage_is_told_apart() {
        let mut out = Vec::new();
        put_removed(&mut out, "a", 1, EventKind::Delete);
        seal(&mut out);
        assert_eq!(next_frame(&out[..out.len() - 1]), Err(Bad::Truncated));
        assert_eq!(next_frame(&out[..5]), Err(Bad::Truncated));
        let mut flipped = out.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(next_frame(&flipped), Err(Bad::Checksum));
        assert_eq!(next_frame(&[0; 16]), Err(Bad::Length(0)));
        assert_eq!(
            next_frame(&[0xFF; 16]),
            Err(Bad::Length(u64::from(u32::MAX)))
        );
        // A frame whose checksum holds but whose type is unknown: a newer format.
        let mut unknown = Vec::new();
        frame(&mut unknown, |out| out.push(99));
        seal(&mut unknown);
        let (payload, _) = next_frame(&unknown).unwrap();
        assert!(matches!(decode(payload), Err(Bad::Undecodable(why)) if why.contains("99")));
    }
}
