//! Cursor pagination for lists: `?limit=` and `?cursor=` in, `{"items", "next_cursor"}` out.

use serde::Serialize;
use serde_json::json;

use crate::Problem;
use crate::http::{Request, Response};

/// Items per page when the client does not say.
const DEFAULT_LIMIT: u32 = 50;
/// The most items a client may ask for in one page.
const MAX_LIMIT: u32 = 200;

/// One page of a list, as the client asked for it.
///
/// A handler orders its query by a unique key, asks for [`Page::fetch`] rows after
/// [`Page::after`], and hands them to [`Page::respond`]:
///
/// ```no_run
/// # use truevalue_sdk::prelude::*;
/// # #[derive(FromRow, serde::Serialize)] struct Entry { id: String }
/// fn list(req: &Request) -> Result<Response, Problem> {
///     let page = Page::from_request(req)?;
///     let rows: Vec<Entry> = db::query_as(
///         "SELECT id FROM entries WHERE id > $1 ORDER BY id LIMIT $2",
///         &[page.after.clone().unwrap_or_default().into(), page.fetch().into()],
///     )?;
///     page.respond(rows, |entry| entry.id.clone())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// How many items to return, 1 to 200.
    pub limit: u32,
    /// The key of the last item of the previous page (decoded from `?cursor=`); none on the
    /// first page. Compare it with the column the query orders by.
    pub after: Option<String>,
}

impl Page {
    /// The page a request asks for: `?limit=` (default 50, at most 200) and `?cursor=` (as a
    /// previous page returned it). Anything else is a 422 that names the parameter.
    pub fn from_request(request: &Request) -> Result<Page, Problem> {
        let limit = match request.query("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Problem::field("limit", format!("must be a number from 1 to {MAX_LIMIT}"))
                })?,
        };
        let after = match request.query("cursor") {
            None => None,
            Some(cursor) => Some(
                decode_cursor(&cursor)
                    .ok_or_else(|| Problem::field("cursor", "is not one this API returned"))?,
            ),
        };
        Ok(Page { limit, after })
    }

    /// How many rows to ask the database for: one more than the page holds, so that the
    /// extra row tells whether there is a next page.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// `200 {"items": [...], "next_cursor": ...}`: the first `limit` rows, and the cursor of the
    /// last of them when the database returned the extra row (null on the last page). `key`
    /// gives an item's key: the unique value the query orders by.
    pub fn respond<T: Serialize>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Response, Problem> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = match (more, rows.last()) {
            (true, Some(last)) => Some(encode_cursor(&key(last))),
            _ => None,
        };
        Response::json(200, &json!({ "items": rows, "next_cursor": next_cursor }))
    }
}

/// Cursors are opaque to clients: the key in URL-safe base64 with a checksum, so that a
/// cursor cut short or edited by hand is refused instead of silently starting elsewhere. The
/// checksum is not a signature: a cursor grants nothing, the query decides what the caller may
/// see.
pub(crate) fn encode_cursor(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes.extend_from_slice(&checksum(key.as_bytes()).to_be_bytes());
    base64url_encode(&bytes)
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64url_decode(cursor)?;
    let split = bytes.len().checked_sub(4)?;
    let (key, sum) = bytes.split_at(split);
    if sum != checksum(key).to_be_bytes() {
        return None;
    }
    String::from_utf8(key.to_vec()).ok()
}

/// FNV-1a over a fixed prefix and the key.
fn checksum(key: &[u8]) -> u32 {
    b"truevalue cursor\0"
        .iter()
        .chain(key)
        .fold(0x811c_9dc5_u32, |hash, &byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// Decodes unpadded URL-safe base64; only the exact text [`base64url_encode`] makes is accepted.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = ALPHABET.iter().position(|&a| a == c)?;
            n |= (value as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    (base64url_encode(&out) == text).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::tests::request_with_query;

    fn page(query: &str) -> Result<Page, Problem> {
        Page::from_request(&request_with_query(query))
    }

    #[test]
    fn the_limit_defaults_to_50_and_must_be_1_to_200() {
        assert_eq!(
            page("").unwrap(),
            Page {
                limit: 50,
                after: None
            }
        );
        assert_eq!(page("limit=1").unwrap().limit, 1);
        assert_eq!(page("limit=200").unwrap().limit, 200);
        assert_eq!(page("limit=200").unwrap().fetch(), 201);
        for bad in [
            "limit=0",
            "limit=201",
            "limit=abc",
            "limit=-1",
            "limit=",
            "limit=1.5",
        ] {
            let problem = page(bad).unwrap_err();
            assert_eq!(
                (problem.status, problem.kind.as_str()),
                (422, "validation"),
                "{bad}"
            );
            assert_eq!(problem.errors[0].field, "limit", "{bad}");
            assert_eq!(problem.detail, "`limit` must be a number from 1 to 200");
        }
    }

    #[test]
    fn a_cursor_round_trips_any_key() {
        for key in [
            "",
            "a",
            "ab",
            "abc",
            "1700000000.0190a6e2-7c1e-7000-8000-000000000000",
            "Zoë 李",
        ] {
            let cursor = encode_cursor(key);
            assert!(
                cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{cursor}"
            );
            let query = format!("cursor={cursor}&limit=2");
            assert_eq!(page(&query).unwrap().after.as_deref(), Some(key));
        }
    }

    #[test]
    fn an_edited_cut_or_made_up_cursor_is_422() {
        let cursor = encode_cursor("1700000000.session-a");
        let mut edited = cursor.clone().into_bytes();
        edited[2] = if edited[2] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        for bad in [
            edited.as_str(),
            &cursor[..cursor.len() - 1],
            &cursor[1..],
            "1700000000.session-a",
            "not a cursor",
            "",
            "%00",
        ] {
            let problem = page(&format!("cursor={bad}")).unwrap_err();
            assert_eq!(problem.status, 422, "{bad:?}");
            assert_eq!(problem.errors[0].field, "cursor");
        }
    }

    #[test]
    fn respond_returns_limit_items_and_a_cursor_only_when_more_exist() {
        let page = Page {
            limit: 2,
            after: None,
        };
        let body = |response: Response| -> serde_json::Value {
            serde_json::from_slice(&response.body).unwrap()
        };
        let more = body(
            page.respond(vec!["a", "b", "c"], |s| s.to_string())
                .unwrap(),
        );
        assert_eq!(more["items"], json!(["a", "b"]));
        let cursor = more["next_cursor"].as_str().unwrap();
        assert_eq!(decode_cursor(cursor).as_deref(), Some("b"));

        let last = body(page.respond(vec!["c", "d"], |s| s.to_string()).unwrap());
        assert_eq!(last["items"], json!(["c", "d"]));
        assert_eq!(last["next_cursor"], serde_json::Value::Null);

        let empty = body(page.respond(Vec::<String>::new(), String::clone).unwrap());
        assert_eq!(empty, json!({ "items": [], "next_cursor": null }));
    }
}
