"""The TrueValue plugin SDK for Python: what the Rust SDK gives a component, for componentize-py.

A plugin is one module that builds a :class:`Plugin`, adds routes to it and exports its
``Endpoint`` and ``Manifest`` (the ``plugin`` world of ``wit/``)::

    from truevalue import Plugin, Problem, db

    app = Plugin(version="0.1.0", migrations={"sqlite": [...], "postgres": [...]})

    @app.get("/notes/api/notes/{id}")
    def show(request, id):
        rows = db.query("SELECT id, text FROM notes WHERE id = $1", [int(id)])
        if not rows:
            raise Problem.not_found(f"no note {id}")
        return rows[0]

    Endpoint, Manifest = app.exports()

A handler returns a ``dict`` or ``list`` (200, JSON), a :class:`Response`, or ``None`` (204),
and raises :class:`Problem` for an RFC 9457 problem response. Any other exception is a 500 whose
detail goes to the host's log, never to the client.
"""

from __future__ import annotations

import json as _json
import sys as _sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qsl

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.exports import endpoint as _endpoint
from wit_world.exports import manifest as _manifest
from wit_world.imports import config as _config
from wit_world.imports import context as _context
from wit_world.imports import database as _database
from wit_world.imports import log as _log

__all__ = [
    "Plugin",
    "Request",
    "Response",
    "Problem",
    "Context",
    "db",
    "config",
    "log",
    "permission_matches",
]

PROBLEM_TYPES = "https://truevalue.dev/problems/"


class Problem(Exception):
    """An RFC 9457 problem response: raise it from a handler."""

    def __init__(self, status: int, kind: str, title: str, detail: str = ""):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors: List[Dict[str, str]] = []

    @classmethod
    def bad_request(cls, detail: str) -> "Problem":
        return cls(400, "bad-request", "Bad request", detail)

    @classmethod
    def unauthorized(cls, detail: str) -> "Problem":
        return cls(401, "unauthorized", "Unauthorized", detail)

    @classmethod
    def forbidden(cls, detail: str) -> "Problem":
        return cls(403, "forbidden", "Forbidden", detail)

    @classmethod
    def not_found(cls, detail: str) -> "Problem":
        return cls(404, "not-found", "Not found", detail)

    @classmethod
    def method_not_allowed(cls, detail: str) -> "Problem":
        return cls(405, "method-not-allowed", "Method not allowed", detail)

    @classmethod
    def conflict(cls, detail: str) -> "Problem":
        return cls(409, "conflict", "Conflict", detail)

    @classmethod
    def unprocessable(cls, detail: str) -> "Problem":
        return cls(422, "validation", "Invalid input", detail)

    @classmethod
    def field(cls, name: str, message: str) -> "Problem":
        """A 422 naming one invalid field; chain :meth:`and_field` for more."""
        return cls(422, "validation", "Invalid input", "").and_field(name, message)

    def and_field(self, name: str, message: str) -> "Problem":
        sentence = f"`{name}` {message}"
        self.detail = sentence if not self.detail else f"{self.detail}; {sentence}"
        self.errors.append({"field": name, "message": message})
        return self

    @classmethod
    def internal(cls, detail: str) -> "Problem":
        return cls(500, "internal", "Internal error", detail)

    def body(self, request_id: str) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "type": PROBLEM_TYPES + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


def permission_matches(granted: str, wanted: str) -> bool:
    """Whether the granted permission (`resource:action`, with `*` wildcards) covers `wanted`."""
    if granted in ("*", wanted):
        return True
    if ":" not in granted or ":" not in wanted:
        return False
    resource, action = granted.split(":", 1)
    wanted_resource, wanted_action = wanted.split(":", 1)
    if (resource, action) == ("*", "*"):
        return True
    if resource == "*":
        return action != "" and action == wanted_action
    if action == "*":
        return resource != "" and resource == wanted_resource
    return False


class Context:
    """Who is calling, as the host verified it: a plugin may trust these values. Each is read
    from the host (the `context` interface) when first used."""

    @cached_property
    def request_id(self) -> str:
        return _context.request_id()

    @cached_property
    def user_id(self) -> Optional[str]:
        return _context.user_id()

    @cached_property
    def org_id(self) -> Optional[str]:
        return _context.org_id()

    @cached_property
    def roles(self) -> List[str]:
        return list(_context.roles())

    @cached_property
    def permissions(self) -> List[str]:
        return list(_context.permissions())

    @cached_property
    def session_id(self) -> Optional[str]:
        return _context.session_id()

    @cached_property
    def client_ip(self) -> Optional[str]:
        return _context.client_ip()

    @cached_property
    def caller(self) -> Optional[str]:
        return _context.caller()

    def has(self, permission: str) -> bool:
        return any(permission_matches(granted, permission) for granted in self.permissions)

    def require(self, permission: str) -> None:
        """Raises 401 on an anonymous request and 403 without `permission`."""
        if self.user_id is None and self.caller is None:
            raise Problem.unauthorized("sign in first")
        if not self.has(permission):
            raise Problem.forbidden(f"this needs the `{permission}` permission")

    def require_org(self) -> str:
        """The caller's organization id; 403 outside any organization."""
        if self.org_id is None:
            raise Problem.forbidden("this needs a token scoped to an organization")
        return self.org_id


class Request:
    """One HTTP request routed to the plugin."""

    def __init__(self, raw: _endpoint.Request):
        self.method: str = raw.method
        self.path: str = raw.path
        self.query_string: str = raw.query
        self.headers: Dict[str, str] = {name: value for name, value in raw.headers}
        self.body: bytes = bytes(raw.body)
        self.context = Context()
        self.query: Dict[str, str] = dict(parse_qsl(raw.query, keep_blank_values=True))

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON; 400 when it is not."""
        try:
            return _json.loads(self.body or b"null")
        except ValueError as error:
            raise Problem.bad_request(f"the body is not valid JSON: {error}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: List[Tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any) -> "Response":
        return cls(status, _json.dumps(value).encode(), [("content-type", "application/json")])

    @classmethod
    def created(cls, value: Any, location: Optional[str] = None) -> "Response":
        response = cls.json(201, value)
        if location:
            response.headers.append(("location", location))
        return response

    @classmethod
    def no_content(cls) -> "Response":
        return cls(204)


Route = Tuple[str, List[str], Callable[..., Any]]


class Plugin:
    """The plugin: its version, migrations and routes."""

    def __init__(self, version: str, migrations: Optional[Dict[str, Iterable[str]]] = None):
        self.version = version
        # Per engine ("sqlite", "postgres"): the SQL of each migration, in order (ids 1, 2, …).
        self.migrations = {engine: list(sqls) for engine, sqls in (migrations or {}).items()}
        self.routes: List[Route] = []

    def route(self, method: str, pattern: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Adds a route: `{name}` matches one path segment, passed to the handler by name."""
        segments = pattern.strip("/").split("/")

        def add(function: Callable[..., Any]) -> Callable[..., Any]:
            self.routes.append((method.upper(), segments, function))
            return function

        return add

    def get(self, pattern: str):
        return self.route("GET", pattern)

    def post(self, pattern: str):
        return self.route("POST", pattern)

    def put(self, pattern: str):
        return self.route("PUT", pattern)

    def patch(self, pattern: str):
        return self.route("PATCH", pattern)

    def delete(self, pattern: str):
        return self.route("DELETE", pattern)

    def dispatch(self, request: Request) -> Response:
        path = request.path.strip("/").split("/")
        allowed = []
        for method, segments, function in self.routes:
            params = _match(segments, path)
            if params is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            return _to_response(function(request, **params))
        if allowed:
            raise Problem.method_not_allowed(f"{request.method} is not allowed here")
        raise Problem.not_found(f"no route for {request.path}")

    def handle(self, raw: _endpoint.Request) -> _endpoint.Response:
        request = Request(raw)
        request_id = request.context.request_id
        try:
            response = self.dispatch(request)
        except Problem as problem:
            if problem.status >= 500:
                print(f"{problem}", file=_sys.stderr)
            response = Response(
                problem.status,
                _json.dumps(problem.body(request_id)).encode(),
                [("content-type", "application/problem+json")],
            )
        except Exception as error:  # the host answers the client with a generic 500
            print(f"{type(error).__name__}: {error}", file=_sys.stderr)
            response = Response(
                500,
                _json.dumps(Problem.internal(str(error)).body(request_id)).encode(),
                [("content-type", "application/problem+json")],
            )
        return _endpoint.Response(response.status, response.headers, response.body)

    def exports(self):
        """The `Endpoint` and `Manifest` classes componentize-py looks for in the app module."""
        plugin = self

        class Endpoint(_exports.Endpoint):
            def handle(self, request: _endpoint.Request) -> _endpoint.Response:
                return plugin.handle(request)

        class Manifest(_exports.Manifest):
            def version(self) -> str:
                return plugin.version

            def migrations(self, dialect: _database.Dialect) -> List[_manifest.Migration]:
                engine = "postgres" if dialect == _database.Dialect.POSTGRES else "sqlite"
                return [
                    _manifest.Migration(n, f"migration {n}", sql)
                    for n, sql in enumerate(plugin.migrations.get(engine, []), start=1)
                ]

        return Endpoint, Manifest


def _match(segments: List[str], path: List[str]) -> Optional[Dict[str, str]]:
    if len(segments) != len(path):
        return None
    params = {}
    for want, got in zip(segments, path):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def _to_response(value: Any) -> Response:
    if value is None:
        return Response.no_content()
    if isinstance(value, Response):
        return value
    return Response.json(200, value)


class db:
    """The `database` capability: one transaction per request, committed on a status below 500."""

    @staticmethod
    def query(sql: str, params: Iterable[Any] = ()) -> List[Dict[str, Any]]:
        """Rows as dicts of column name to value (None, int, float, str, bytes, bool)."""
        try:
            result = _database.query(sql, [_value(p) for p in params])
        except Err as error:
            raise _problem(error.value) from None
        return [
            {column: _python(value) for column, value in zip(result.columns, row)}
            for row in result.rows
        ]

    @staticmethod
    def execute(sql: str, params: Iterable[Any] = ()) -> int:
        """The number of rows changed."""
        try:
            return _database.execute(sql, [_value(p) for p in params])
        except Err as error:
            raise _problem(error.value) from None


def _value(value: Any) -> _database.Value:
    if value is None:
        return _database.Value_Null()
    if isinstance(value, bool):
        return _database.Value_Boolean(value)
    if isinstance(value, int):
        return _database.Value_Integer(value)
    if isinstance(value, float):
        return _database.Value_Real(value)
    if isinstance(value, str):
        return _database.Value_Text(value)
    if isinstance(value, (bytes, bytearray)):
        return _database.Value_Blob(bytes(value))
    raise TypeError(f"cannot bind a {type(value).__name__} to a statement")


def _python(value: _database.Value) -> Any:
    return None if isinstance(value, _database.Value_Null) else value.value


def _problem(error: Any) -> Problem:
    if isinstance(error, _database.Error_Constraint):
        return Problem.conflict("the request conflicts with existing data")
    return Problem.internal(f"database: {type(error).__name__}: {error.value}")


class config:
    """The `config` capability: the `[config]` table of the plugin's policy, typed."""

    @staticmethod
    def get(key: str, default: Optional[str] = None) -> Optional[str]:
        value = _config.get(key)
        return default if value is None else value

    @staticmethod
    def get_int(key: str, default: Optional[int] = None) -> Optional[int]:
        value = _config.get(key)
        return default if value is None else int(value)

    @staticmethod
    def get_float(key: str, default: Optional[float] = None) -> Optional[float]:
        value = _config.get(key)
        return default if value is None else float(value)

    @staticmethod
    def get_bool(key: str, default: Optional[bool] = None) -> Optional[bool]:
        value = _config.get(key)
        return default if value is None else value == "true"


class log:
    """The `log` capability: lines in the host's log with the plugin's name and request id.
    Without the grant, `print()` reaches the same log (as stdout)."""

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)
