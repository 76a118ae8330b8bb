//! Requests and responses as a component sees them.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;
use crate::bindings::exports::truevalue::platform::handler;

/// The verified caller, filled in by the host.
pub use handler::RequestContext as Context;

/// One HTTP request routed to this component.
pub struct Request {
    raw: handler::Request,
    pub(crate) params: HashMap<String, String>,
}

impl Request {
    pub(crate) fn from_raw(raw: handler::Request) -> Self {
        Self {
            raw,
            params: HashMap::new(),
        }
    }

    /// The method in upper case.
    pub fn method(&self) -> &str {
        &self.raw.method
    }

    /// The full path, including the component's route prefix.
    pub fn path(&self) -> &str {
        &self.raw.path
    }

    /// The verified caller.
    pub fn context(&self) -> &Context {
        &self.raw.context
    }

    /// The request id, for logs and problem responses.
    pub fn request_id(&self) -> &str {
        &self.raw.context.request_id
    }

    /// A header's value; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.raw
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A `{name}` segment of the matched route; a missing one is the component's bug.
    pub fn param(&self, name: &str) -> Result<&str, Problem> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Problem::internal(format!("route has no parameter `{name}`")))
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        self.raw.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The raw body.
    pub fn body(&self) -> &[u8] {
        &self.raw.body
    }

    /// The body parsed as JSON; a body that does not parse is a 400 or 422 problem that says why.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        if self.raw.body.is_empty() {
            return Err(Problem::bad_request("the request needs a JSON body"));
        }
        serde_json::from_slice(&self.raw.body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Problem::unprocessable(e.to_string()),
            _ => Problem::bad_request(format!("the body is not valid JSON: {e}")),
        })
    }
}

/// `s` percent-encoded for a query string or a path segment: everything but `A–Z a–z 0–9 - . _ ~`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP response built by a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, Problem> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Problem::internal(format!("could not encode the response: {e}")))?;
        Ok(Self::new(status)
            .header("content-type", "application/json")
            .body(body))
    }

    /// A response with only a status.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Self {
        Self::new(204)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn into_raw(self) -> handler::Response {
        handler::Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request as the host hands it over, with the caller's identity filled in.
    pub(crate) fn request(
        method: &str,
        path: &str,
        query: &str,
        identity: (Option<&str>, Option<&str>, &[&str]),
    ) -> Request {
        let (user_id, org_id, permissions) = identity;
        Request::from_raw(handler::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Vec::new(),
            context: handler::RequestContext {
                request_id: "req-1".into(),
                user_id: user_id.map(Into::into),
                org_id: org_id.map(Into::into),
                roles: Vec::new(),
                permissions: permissions.iter().map(|p| p.to_string()).collect(),
                session_id: user_id.map(|_| "session-1".into()),
                client_ip: None,
                caller: None,
            },
        })
    }

    pub(crate) fn request_as(
        user: Option<&str>,
        org: Option<&str>,
        permissions: &[&str],
    ) -> Request {
        request("GET", "/x", "", (user, org, permissions))
    }

    pub(crate) fn request_with_query(query: &str) -> Request {
        request("GET", "/x", query, (None, None, &[]))
    }
}
