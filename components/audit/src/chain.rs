//! The hash chain of an organization's entries.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Entry;

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The entry's fields as compact JSON with sorted keys: what its hash covers.
pub fn canonical(entry: &Entry) -> String {
    json!({
        "seq": entry.seq,
        "id": entry.id,
        "org_id": entry.org_id,
        "time": entry.time,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "resource": entry.resource,
        "source": entry.source,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "request_id": entry.request_id,
        "data": entry.data,
    })
    .to_string()
}

/// The hash of an entry whose canonical form is `canonical`, following `prev_hash`.
pub fn link(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, action: &str) -> Entry {
        Entry {
            seq,
            id: format!("id-{seq}"),
            org_id: "org-1".into(),
            time: "2026-12-01T00:00:00Z".into(),
            actor_id: Some("user-1".into()),
            action: action.into(),
            resource: "user-2".into(),
            source: "/truevalue/org".into(),
            ip: None,
            user_agent: None,
            request_id: Some("req".into()),
            data: "{\"role\":\"member\"}".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_canonical_form_has_sorted_keys_and_covers_every_field() {
        let text = canonical(&entry(1, "member.added"));
        assert!(
            text.starts_with("{\"action\":\"member.added\",\"actor_id\":\"user-1\""),
            "{text}"
        );
        assert!(
            text.contains("\"data\":\"{\\\"role\\\":\\\"member\\\"}\""),
            "{text}"
        );
    }

    #[test]
    fn a_hash_depends_on_the_entry_and_on_the_one_before() {
        let first = link(GENESIS, &canonical(&entry(1, "member.added")));
        assert_eq!(first.len(), 64);
        assert_ne!(
            first,
            link(GENESIS, &canonical(&entry(1, "member.removed")))
        );
        let second = link(&first, &canonical(&entry(2, "member.added")));
        assert_ne!(second, link(GENESIS, &canonical(&entry(2, "member.added"))));
    }
}
