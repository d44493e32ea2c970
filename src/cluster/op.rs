//! The cluster's log entries: what one JetStream message carries.
//!
//! Written with the field encoding of the durable log (`persist/record.rs`: integers `u64 LE`,
//! strings `u32 LE length + bytes`, an absent optional string as length `u32::MAX`), so the two
//! logs share one reader and one writer of fields. A message is:
//!
//! `node: u64 | op: u64 | identity? | request id? | type: u8 | fields…`
//!
//! where `node` is the proposing node's random id and `op` its counter (together the message's
//! `Nats-Msg-Id`, so a retried publish is stored once), and the origin is who made the change.
//!
//! | type | entry | fields |
//! | --- | --- | --- |
//! | 32 | set | count, then per register: name, value, metadata?, ttl_ms |
//! | 33 | delete | count, then names |
//! | 34 | change requests | count, then per request: name, value |
//! | 35 | take | count, then per request: name, request id |
//! | 36 | touch (refreshes) | count, then names |
//! | 37 | expire | count, then per register: name, revision, touch sequence |
//! | 38 | snapshot | at (the entry it holds the state after), length, crc32c, count, then chunk sequences |
//!
//! A reader that meets an unknown type refuses the entry (a newer node wrote it), never skips it.

use crate::json::Json;
use crate::persist::record::{put_optional_str, put_str, put_u64, Bad, Fields};
use crate::store::replica::{Proposal, SetWrite};
use crate::store::{Origin, Revision};
use crate::sync::Arc;

const SET: u8 = 32;
const DELETE: u8 = 33;
const REQUESTS: u8 = 34;
const TAKE: u8 = 35;
const TOUCH: u8 = 36;
const EXPIRE: u8 = 37;
const SNAPSHOT: u8 = 38;

/// A snapshot of the replicas' state after the log entry at `at`, stored in the stream as
/// chunks (`snapshot.rs`): where to find it and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotHead {
    pub(crate) at: u64,
    /// Its length in bytes and their crc32c.
    pub(crate) len: u64,
    pub(crate) crc: u32,
    /// The stream sequences of its chunks, in order.
    pub(crate) chunks: Vec<u64>,
}

/// One register's expiry as proposed: it expires if it is still at `revision` and was last set
/// or refreshed by the log entry at `touched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expiry {
    pub(crate) name: Arc<str>,
    pub(crate) revision: Revision,
    pub(crate) touched: u64,
}

/// What a log entry asks of every replica.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// A write a node's client made.
    Proposal(Proposal),
    /// Registers refreshed (without a change) on the proposing node.
    Touch(Vec<Arc<str>>),
    /// Registers past their deadline on the proposing node.
    Expire(Vec<Expiry>),
    /// A snapshot was stored: the log before it can go.
    Snapshot(SnapshotHead),
}

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) node: u64,
    pub(crate) op: u64,
    pub(crate) origin: Option<Origin>,
    pub(crate) body: Body,
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    put_u64(out, count as u64);
}

/// Encodes an entry.
pub(crate) fn encode(node: u64, op: u64, origin: Option<&Origin>, body: &Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_u64(&mut out, node);
    put_u64(&mut out, op);
    put_optional_str(&mut out, origin.map(Origin::identity));
    put_optional_str(&mut out, origin.map(Origin::request_id));
    match body {
        Body::Proposal(Proposal::Set { writes }) => {
            out.push(SET);
            put_count(&mut out, writes.len());
            for write in writes {
                put_str(&mut out, &write.name);
                put_str(&mut out, write.value.as_str());
                put_optional_str(&mut out, write.metadata.as_ref().map(Json::as_str));
                put_u64(&mut out, write.ttl_ms);
            }
        }
        Body::Proposal(Proposal::Remove { names }) => {
            out.push(DELETE);
            put_count(&mut out, names.len());
            for name in names {
                put_str(&mut out, name);
            }
        }
        Body::Proposal(Proposal::Requests { requests }) => {
            out.push(REQUESTS);
            put_count(&mut out, requests.len());
            for (name, value) in requests {
                put_str(&mut out, name);
                put_str(&mut out, value.as_str());
            }
        }
        Body::Proposal(Proposal::Take { requests }) => {
            out.push(TAKE);
            put_count(&mut out, requests.len());
            for (name, id) in requests {
                put_str(&mut out, name);
                put_u64(&mut out, *id);
            }
        }
        Body::Touch(names) => {
            out.push(TOUCH);
            put_count(&mut out, names.len());
            for name in names {
                put_str(&mut out, name);
            }
        }
        Body::Expire(expiries) => {
            out.push(EXPIRE);
            put_count(&mut out, expiries.len());
            for expiry in expiries {
                put_str(&mut out, &expiry.name);
                put_u64(&mut out, expiry.revision);
                put_u64(&mut out, expiry.touched);
            }
        }
        Body::Snapshot(head) => {
            out.push(SNAPSHOT);
            put_u64(&mut out, head.at);
            put_u64(&mut out, head.len);
            put_u64(&mut out, u64::from(head.crc));
            put_count(&mut out, head.chunks.len());
            for chunk in &head.chunks {
                put_u64(&mut out, *chunk);
            }
        }
    }
    out
}

/// Reads a count, refusing one the rest of the entry cannot hold (each item takes at least
/// `min_item` bytes), so a damaged count allocates nothing large.
fn count(fields: &mut Fields<'_>, min_item: usize) -> Result<usize, Bad> {
    let count = fields.u64()?;
    let room = (fields.0.len() / min_item.max(1)) as u64;
    if count > room {
        return Err(Bad::Undecodable(format!(
            "a count of {count} in {} bytes",
            fields.0.len()
        )));
    }
    Ok(count as usize)
}

/// Decodes an entry.
pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, Bad> {
    let mut f = Fields(bytes);
    let node = f.u64()?;
    let op = f.u64()?;
    let identity = f.optional_str()?;
    let request_id = f.optional_str()?;
    let origin = match (identity, request_id) {
        (None, None) => None,
        (identity, request_id) => Some(Origin::new(
            identity.unwrap_or(""),
            request_id.unwrap_or(""),
            None,
        )),
    };
    let kind = f.take(1)?[0];
    let body = match kind {
        SET => {
            let n = count(&mut f, 16)?;
            let mut writes = Vec::with_capacity(n);
            for _ in 0..n {
                let name: Arc<str> = Arc::from(f.str()?);
                let value = f.json()?;
                let metadata = f.optional_json()?;
                let ttl_ms = f.u64()?;
                writes.push(SetWrite {
                    name,
                    value,
                    metadata,
                    ttl_ms,
                });
            }
            Body::Proposal(Proposal::Set { writes })
        }
        DELETE | TOUCH => {
            let n = count(&mut f, 4)?;
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                names.push(Arc::from(f.str()?));
            }
            if kind == DELETE {
                Body::Proposal(Proposal::Remove { names })
            } else {
                Body::Touch(names)
            }
        }
        REQUESTS => {
            let n = count(&mut f, 8)?;
            let mut requests = Vec::with_capacity(n);
            for _ in 0..n {
                let name: Arc<str> = Arc::from(f.str()?);
                requests.push((name, f.json()?));
            }
            Body::Proposal(Proposal::Requests { requests })
        }
        TAKE => {
            let n = count(&mut f, 12)?;
            let mut requests = Vec::with_capacity(n);
            for _ in 0..n {
                let name: Arc<str> = Arc::from(f.str()?);
                requests.push((name, f.u64()?));
            }
            Body::Proposal(Proposal::Take { requests })
        }
        EXPIRE => {
            let n = count(&mut f, 20)?;
            let mut expiries = Vec::with_capacity(n);
            for _ in 0..n {
                let name: Arc<str> = Arc::from(f.str()?);
                let revision = f.u64()?;
                let touched = f.u64()?;
                expiries.push(Expiry {
                    name,
                    revision,
                    touched,
                });
            }
            Body::Expire(expiries)
        }
        SNAPSHOT => {
            let at = f.u64()?;
            let len = f.u64()?;
            let crc = u32::try_from(f.u64()?)
                .map_err(|_| Bad::Undecodable("a crc32c above 32 bits".into()))?;
            let n = count(&mut f, 8)?;
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                chunks.push(f.u64()?);
            }
            Body::Snapshot(SnapshotHead {
                at,
                len,
                crc,
                chunks,
            })
        }
        other => {
            return Err(Bad::Undecodable(format!(
                "an entry of unknown type {other}"
            )))
        }
    };
    f.end()?;
    Ok(Entry {
        node,
        op,
        origin,
        body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn entries_round_trip() {
        let origin = Origin::new("alice", "req-1", None);
        let bodies = vec![
            Body::Proposal(Proposal::Set {
                writes: vec![
                    SetWrite {
                        name: Arc::from("a"),
                        value: json(r#"{"x":1}"#),
                        metadata: Some(json(r#"{"m":"n"}"#)),
                        ttl_ms: 5000,
                    },
                    SetWrite {
                        name: Arc::from("b"),
                        value: json("2"),
                        metadata: None,
                        ttl_ms: 1,
                    },
                ],
            }),
            Body::Proposal(Proposal::Remove {
                names: vec![Arc::from("a"), Arc::from("")],
            }),
            Body::Proposal(Proposal::Requests {
                requests: vec![(Arc::from("lamp"), json("true"))],
            }),
            Body::Proposal(Proposal::Take {
                requests: vec![(Arc::from("lamp"), 7)],
            }),
            Body::Touch(vec![Arc::from("a"), Arc::from("b")]),
            Body::Expire(vec![Expiry {
                name: Arc::from("a"),
                revision: 3,
                touched: 9,
            }]),
            Body::Snapshot(SnapshotHead {
                at: 40,
                len: 1 << 20,
                crc: 0xdead_beef,
                chunks: vec![41, 45, 46],
            }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let with = if i % 2 == 0 { Some(&origin) } else { None };
            let bytes = encode(11, i as u64, with, &body);
            let entry = decode(&bytes).unwrap();
            assert_eq!(entry.node, 11);
            assert_eq!(entry.op, i as u64);
            assert_eq!(
                entry.origin.as_ref().map(Origin::identity),
                with.map(Origin::identity)
            );
            assert_eq!(entry.body, body);
            // Every strict prefix is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "prefix {cut} of entry {i}");
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        let mut bytes = encode(1, 1, None, &Body::Touch(Vec::new()));
        let at = bytes.len() - 8;
        bytes[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
        let mut unknown = encode(1, 1, None, &Body::Touch(Vec::new()));
        let kind = unknown.len() - 9;
        unknown[kind] = 99;
        assert!(decode(&unknown).is_err());
    }
}
