//! Snapshots of a cluster's state, kept in its own stream: a node that starts loads the
//! newest one and replays only the entries after it, and the stream is trimmed.
//!
//! # How
//!
//! * **Exact, not fuzzy.** A replica commits only what its applier applies, so a snapshot
//!   taken by the applier between two entries is the state after entry `at`, on every
//!   replica alike (deadlines aside: each node's own clock). It is the durable log's snapshot
//!   (`persist/snapshot.rs`) behind a cluster header: the last request id handed out (so a
//!   restored replica numbers the next requests as the others do) and the set-or-touch entry
//!   of each register (which expiry proposals are checked against).
//! * **Stored in chunks** of [`CHUNK`] bytes on `reg.<name>.snap.data`, by a task of its own
//!   (the applier goes on). Then its head — where the chunks are, their length and crc32c —
//!   is published on `reg.<name>.snap.head`, where a starting node looks up the newest, and
//!   in the log, where every replica learns of it at the same point.
//! * **One writer.** The first entry at least `snapshot_every` entries after the last
//!   snapshot *claims* it for the node that proposed that entry; the claim is log state, so
//!   every replica agrees on it. If no snapshot follows within another `snapshot_every`
//!   entries (its writer died), the next entry claims it again.
//! * **Trimming.** Once its head is in the log, the writer purges the stream before the
//!   *previous* snapshot's entry: a node behind by less than a snapshot interval still finds
//!   every entry it needs. One further behind cannot go on (it says so in its status and
//!   must restart, which loads the newest snapshot).
//!
//! Header: `MAGIC | at: u64 | last request id: u64 | count | (name, touch entry, node)*`,
//! fields as in `persist/record.rs`; then the durable snapshot.

use async_nats::jetstream::stream::Stream;

use crate::cluster::op::SnapshotHead;
use crate::persist::record::{put_str, put_u64, Fields};
use crate::persist::snapshot::{write_collected, Collected};
use crate::store::{Registry, Revision};
use crate::sync::{Arc, Map};

/// The cluster header's magic and format version.
const MAGIC: &[u8; 8] = b"REGCLS\0\x01";

/// Bytes in one chunk message (JetStream's default message limit is 1 MiB).
pub(crate) const CHUNK: usize = 256 << 10;

/// Each live register's last set-or-touch entry and the node that proposed it.
pub(crate) type Touches = Map<Arc<str>, (u64, u64)>;

/// A replica's state after entry `at`, read out (cheaply: the registers' `Arc`s) by the
/// applier between two entries, to be encoded off it.
pub(crate) struct Taken {
    at: u64,
    last_request: u64,
    revision: Revision,
    touches: Vec<(Arc<str>, u64, u64)>,
    state: Collected,
}

/// Reads out the state of `registry`, the replica that has just applied entry `at`.
pub(crate) fn take(registry: &Registry, at: u64, touches: &Touches) -> Taken {
    let shared = registry.shared_ref();
    let mut entries = Vec::with_capacity(touches.len());
    touches.for_each(|name, (entry, node)| entries.push((Arc::clone(name), *entry, *node)));
    Taken {
        at,
        last_request: shared.requests.last_id(),
        revision: registry.revision(),
        touches: entries,
        state: Collected::from(shared),
    }
}

impl Taken {
    /// The snapshot's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.state.registers() * 96);
        out.extend_from_slice(MAGIC);
        put_u64(&mut out, self.at);
        put_u64(&mut out, self.last_request);
        put_u64(&mut out, self.touches.len() as u64);
        for (name, entry, node) in &self.touches {
            put_str(&mut out, name);
            put_u64(&mut out, *entry);
            put_u64(&mut out, *node);
        }
        // Writing into a Vec cannot fail.
        let _size = write_collected(&self.state, self.revision, &mut out);
        out
    }
}

/// Encodes the state of `registry`, the replica that has just applied entry `at`.
#[cfg(test)]
fn encode(registry: &Registry, at: u64, touches: &Touches) -> Vec<u8> {
    take(registry, at, touches).encode()
}

/// Restores a snapshot into `registry` (new: it has served no one) and `touches`: the one
/// its head says holds the state after entry `at`; nothing is restored unless it is whole.
pub(crate) fn restore(
    registry: &Registry,
    touches: &Touches,
    bytes: &[u8],
    at: u64,
) -> Result<(), String> {
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a reg cluster snapshot of this format version")?;
    let mut fields = Fields(body);
    let bad = |bad: crate::persist::record::Bad| bad.to_string();
    let holds = fields.u64().map_err(bad)?;
    if holds != at {
        return Err(format!(
            "the snapshot holds the state after entry {holds}, its head says {at}"
        ));
    }
    let last_request = fields.u64().map_err(bad)?;
    let count = fields.u64().map_err(bad)?;
    // Each takes at least 20 bytes: a damaged count allocates nothing large.
    if count > (fields.0.len() / 20) as u64 {
        return Err(format!(
            "a count of {count} touches in {} bytes",
            fields.0.len()
        ));
    }
    let mut restored = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name: Arc<str> = Arc::from(fields.str().map_err(bad)?);
        let entry = fields.u64().map_err(bad)?;
        let node = fields.u64().map_err(bad)?;
        restored.push((name, (entry, node)));
    }
    crate::persist::restore_bytes(registry, fields.0, last_request)?;
    for (name, touched) in restored {
        touches.insert(name, touched);
    }
    Ok(())
}

/// The crc32c a head carries.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    crate::persist::crc::crc32c(bytes)
}

/// Chunks fetched at once when a snapshot loads.
const IN_FLIGHT: usize = 8;

/// Reads the snapshot `head` names from `stream` (direct gets, several in flight), checked
/// against its length and crc32c.
pub(crate) async fn fetch(stream: &Stream, head: &SnapshotHead) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let most = head.chunks.len().saturating_mul(CHUNK);
    let len = usize::try_from(head.len)
        .ok()
        .filter(|len| *len <= most)
        .ok_or_else(|| {
            format!(
                "a snapshot head of {} bytes in {} chunks",
                head.len,
                head.chunks.len()
            )
        })?;
    let mut bytes = Vec::with_capacity(len);
    let mut chunks = futures_util::stream::iter(head.chunks.iter().copied())
        .map(|sequence| async move {
            // A stream made without direct gets answers them with an error: ask its leader.
            match stream.direct_get(sequence).await {
                Ok(message) => Ok(message.payload),
                Err(_) => stream
                    .get_raw_message(sequence)
                    .await
                    .map(|message| message.payload)
                    .map_err(|e| format!("snapshot chunk at {sequence}: {e}")),
            }
        })
        .buffered(IN_FLIGHT);
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > len {
            return Err(format!(
                "the snapshot after entry {} is longer than its head says",
                head.at
            ));
        }
    }
    if bytes.len() != len || checksum(&bytes) != head.crc {
        return Err(format!(
            "the snapshot after entry {} does not match its head (length or crc32c)",
            head.at
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::json::Json;
    use crate::store::Selector;

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_snapshot_restores_the_same_state_revisions_requests_and_touches() {
        let registry = Registry::new();
        registry
            .set(
                "a",
                json(r#"{"x":1}"#),
                Some(json(r#"{"m":"n"}"#)),
                Some(Duration::from_secs(60)),
            )
            .unwrap();
        registry.set("b", json("2"), None, None).unwrap();
        registry.set("gone", json("3"), None, None).unwrap();
        registry.remove("gone").unwrap();
        registry.request("a", json("5")).unwrap();
        registry.request("b", json("6")).unwrap();
        let taken = registry.try_take_requests(&Selector::names(["b"]));
        assert_eq!(taken.len(), 1);
        let touches = Touches::new();
        touches.insert(Arc::from("a"), (7, 42));
        touches.insert(Arc::from("b"), (9, 43));
        let bytes = encode(&registry, 12, &touches);

        let copy = Registry::new();
        let copied = Touches::new();
        assert!(
            restore(&copy, &Touches::new(), &bytes, 11).is_err(),
            "another entry's"
        );
        assert_eq!(copy.len(), 0);
        restore(&copy, &copied, &bytes, 12).unwrap();
        assert_eq!(copy.revision(), registry.revision());
        for name in ["a", "b"] {
            assert_eq!(copy.get(name), registry.get(name), "{name}");
        }
        assert!(copy.get("gone").is_none());
        assert_eq!(copied.get("a"), Some((7, 42)));
        assert_eq!(copied.get("b"), Some((9, 43)));
        // The pending request came back; the next one is numbered as on the original.
        let pending = copy.try_take_requests(&Selector::names(["a"]));
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].value, json("5"));
        assert_eq!(
            copy.shared_ref().requests.last_id(),
            registry.shared_ref().requests.last_id()
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_restores_nothing() {
        let registry = Registry::new();
        registry.set("a", json("1"), None, None).unwrap();
        let bytes = encode(&registry, 3, &Touches::new());
        for cut in [0, 8, 20, bytes.len() - 1] {
            let copy = Registry::new();
            assert!(
                restore(&copy, &Touches::new(), &bytes[..cut], 3).is_err(),
                "cut at {cut}"
            );
            assert_eq!(copy.len(), 0, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        let copy = Registry::new();
        assert!(restore(&copy, &Touches::new(), &flipped, 3).is_err());
        assert_eq!(copy.len(), 0);
    }
}
