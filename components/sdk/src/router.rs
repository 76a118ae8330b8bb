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
