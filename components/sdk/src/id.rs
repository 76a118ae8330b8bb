//! Ids for new rows: UUID version 7 (RFC 9562).
//!
//! A v7 UUID starts with the time it was made, so ids sort in the order rows were created and
//! make a good key for cursor pagination and a compact primary-key index; the rest is random,
//! so ids are unique across hosts without coordination and cannot be guessed from one another.
//! The randomness comes from WASI (`wasi:random`), which every component may use: no
//! capability is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// A new UUID v7, lower-case and hyphenated (`0190a6e2-7c1e-7a3b-9f2d-5c4e1b2a3d4f`).
///
/// The first 48 bits are the Unix time in milliseconds and the next 12 the fraction of that
/// millisecond (RFC 9562, method 3), so ids made one after another sort in that order; 62 bits
/// are random.
pub fn new() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format(uuid_v7(
        since.as_millis(),
        since.subsec_nanos() % 1_000_000,
        random(),
    ))
}

/// The 16 bytes of a v7 UUID for a time in milliseconds, the nanoseconds past that millisecond,
/// and 8 random bytes.
fn uuid_v7(millis: u128, sub_millis_nanos: u32, random: [u8; 8]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[10..16]);
    // 12 bits of the fraction of the millisecond: steps of about 244 ns.
    let fraction = u16::try_from(u64::from(sub_millis_nanos) * 4096 / 1_000_000).unwrap_or(4095);
    let [high, low] = fraction.min(4095).to_be_bytes();
    bytes[6] = 0x70 | high;
    bytes[7] = low;
    bytes[8..].copy_from_slice(&random);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    bytes
}

fn format(bytes: [u8; 16]) -> String {
    let hex = crate::hex::encode(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// 8 bytes from WASI's secure random source. Should the host ever refuse them, the instance's
/// hash seed (also random per instance) mixed with the clock stands in, so an id is still
/// unique, if no longer unguessable.
fn random() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        bytes = hasher.finish().to_be_bytes();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_with_the_rfc_variant_and_time_first() {
        let id = new();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "7", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert!(
            id.chars()
                .all(|c| c == '-' || (c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
        );
        let millis = (u64::from_str_radix(&id[..8], 16).unwrap_or(0) << 16)
            | u64::from_str_radix(&id[9..13], 16).unwrap_or(0);
        let now = crate::time::now_ms().unsigned_abs();
        assert!(now.abs_diff(millis) < 5_000, "{id} vs {now}");
    }

    #[test]
    fn ids_sort_by_time_down_to_the_fraction_of_a_millisecond() {
        let a = format(uuid_v7(1_700_000_000_000, 100_000, [0xff; 8]));
        let b = format(uuid_v7(1_700_000_000_000, 400_000, [0x00; 8]));
        let c = format(uuid_v7(1_700_000_000_001, 0, [0xff; 8]));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, "018bcfe5-6800-7199-bfff-ffffffffffff");
        let last = format(uuid_v7(1_700_000_000_000, 999_999, [0; 8]));
        assert_eq!(&last[14..18], "7fff");
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
