//! Routes a request to a handler by method and path pattern (`/hello/{name}`).

use std::collections::HashMap;

use crate::Problem;
use crate::http::{Request, Response};

/// A handler: a plain function of the request.
pub type Handler = fn(&Request) -> Result<Response, Problem>;

/// The component's route table.
#[derive(Default)]
pub struct Router {
    routes: Vec<(String, Vec<Segment>, Handler)>,
}

enum Segment {
    Literal(String),
    Param(String),
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. `pattern` is a path whose `{name}` segments match any one segment.
    pub fn route(mut self, method: &str, pattern: &str, handler: Handler) -> Self {
        let segments = split(pattern)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect();
        self.routes
            .push((method.to_ascii_uppercase(), segments, handler));
        self
    }

    pub fn get(self, pattern: &str, handler: Handler) -> Self {
        self.route("GET", pattern, handler)
    }

    pub fn post(self, pattern: &str, handler: Handler) -> Self {
        self.route("POST", pattern, handler)
    }

    pub fn put(self, pattern: &str, handler: Handler) -> Self {
        self.route("PUT", pattern, handler)
    }

    pub fn patch(self, pattern: &str, handler: Handler) -> Self {
        self.route("PATCH", pattern, handler)
    }

    pub fn delete(self, pattern: &str, handler: Handler) -> Self {
        self.route("DELETE", pattern, handler)
    }

    /// Runs the handler whose route matches; 404 when no path matches, 405 when only the
    /// method does not.
    pub(crate) fn dispatch(&self, request: &mut Request) -> Result<Response, Problem> {
        let path: Vec<&str> = split(request.path()).collect();
        let mut allowed = Vec::new();
        for (method, pattern, handler) in &self.routes {
            let Some(params) = matches(pattern, &path) else {
                continue;
            };
            if method != request.method() {
                allowed.push(method.as_str());
                continue;
            }
            request.params = params;
            return handler(request);
        }
        if allowed.is_empty() {
            Err(Problem::not_found(format!(
                "no route for {}",
                request.path()
            )))
        } else {
            Err(Problem::method_not_allowed(format!(
                "{} is not allowed here; use {}",
                request.method(),
                allowed.join(", ")
            )))
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn matches(pattern: &[Segment], path: &[&str]) -> Option<HashMap<String, String>> {
    if pattern.len() != path.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (segment, actual) in pattern.iter().zip(path) {
        match segment {
            Segment::Literal(literal) if literal == actual => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => {
                params.insert(name.clone(), (*actual).to_string());
            }
        }
    }
    Some(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str) -> Request {
        crate::http::tests::request(method, path, query, (None, None, &[]))
    }

    fn echo_name(request: &Request) -> Result<Response, Problem> {
        Ok(Response::new(200).body(request.param("name")?.to_string()))
    }

    fn router() -> Router {
        Router::new()
            .get("/hello/{name}", echo_name)
            .post("/hello", |_| Ok(Response::new(201)))
    }

    #[test]
    fn path_parameters_are_captured() {
        let response = router()
            .dispatch(&mut request("GET", "/hello/ada", ""))
            .unwrap();
        assert_eq!(response.body, b"ada");
    }

    #[test]
    fn an_unknown_path_is_404_and_a_known_path_with_another_method_is_405() {
        assert_eq!(
            router()
                .dispatch(&mut request("GET", "/bye", ""))
                .unwrap_err()
                .status,
            404
        );
        let problem = router()
            .dispatch(&mut request("DELETE", "/hello", ""))
            .unwrap_err();
        assert_eq!(problem.status, 405);
        assert!(problem.detail.contains("POST"));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let request = request("GET", "/hello", "name=Ada%20L%C3%B6we&x=1+2&bad=%zz");
        assert_eq!(request.query("name").as_deref(), Some("Ada Löwe"));
        assert_eq!(request.query("x").as_deref(), Some("1 2"));
        assert_eq!(request.query("bad").as_deref(), Some("%zz"));
        assert_eq!(request.query("missing"), None);
        assert_eq!(request.header("Content-Type"), Some("application/json"));
    }

    #[test]
    fn percent_encoding_round_trips_through_the_query() {
        let value = "a b&c=d/é%";
        let encoded = crate::http::percent_encode(value);
        assert_eq!(encoded, "a%20b%26c%3Dd%2F%C3%A9%25");
        let request = request("GET", "/hello", &format!("v={encoded}"));
        assert_eq!(request.query("v").as_deref(), Some(value));
    }

    #[test]
    fn problems_render_as_rfc_9457_with_the_request_id() {
        let response =
            Problem::not_found("no such contact").into_response(&request("GET", "/x", ""));
        assert_eq!(response.status, 404);
        assert!(
            response
                .headers
                .contains(&("content-type".into(), "application/problem+json".into()))
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["detail"], "no such contact");
    }
}
