// The TrueValue plugin SDK for JavaScript: what the Rust SDK gives a component, for
// componentize-js and the `plugin` world of `wit/` (`sdk/js/build.mjs` builds a plugin with it).
//
//   import { Plugin, Problem, Response, db } from "truevalue";
//
//   const app = new Plugin({ version: "0.1.0", migrations: { sqlite: [...], postgres: [...] } });
//   app.get("/notes/api/notes/{id}", (request, { id }) => {
//     const rows = db.query("SELECT id, text FROM notes WHERE id = $1", [Number(id)]);
//     if (rows.length === 0) throw Problem.notFound(`no note ${id}`);
//     return rows[0];
//   });
//   export const { endpoint, manifest } = app.exports();
//
// A handler returns an object or array (200, JSON), a `Response`, or undefined (204), and throws
// a `Problem` for an RFC 9457 problem response. Any other error is a 500 whose detail goes to the
// host's log, never to the client.

import * as caller from "truevalue:platform/context@0.1.0";
import * as database from "truevalue:platform/database@0.1.0";
import * as settings from "truevalue:platform/config@0.1.0";
import * as logging from "truevalue:platform/log@0.1.0";

const PROBLEM_TYPES = "https://truevalue.dev/problems/";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class Problem extends Error {
  constructor(status, kind, title, detail = "") {
    super(`${status} ${title}: ${detail}`);
    this.status = status;
    this.kind = kind;
    this.title = title;
    this.detail = detail;
    this.errors = [];
  }
  static badRequest(detail) { return new Problem(400, "bad-request", "Bad request", detail); }
  static unauthorized(detail) { return new Problem(401, "unauthorized", "Unauthorized", detail); }
  static forbidden(detail) { return new Problem(403, "forbidden", "Forbidden", detail); }
  static notFound(detail) { return new Problem(404, "not-found", "Not found", detail); }
  static methodNotAllowed(detail) { return new Problem(405, "method-not-allowed", "Method not allowed", detail); }
  static conflict(detail) { return new Problem(409, "conflict", "Conflict", detail); }
  static unprocessable(detail) { return new Problem(422, "validation", "Invalid input", detail); }
  static internal(detail) { return new Problem(500, "internal", "Internal error", detail); }
  /** A 422 naming one invalid field; chain `andField` for more. */
  static field(name, message) { return new Problem(422, "validation", "Invalid input").andField(name, message); }
  andField(name, message) {
    const sentence = `\`${name}\` ${message}`;
    this.detail = this.detail ? `${this.detail}; ${sentence}` : sentence;
    this.errors.push({ field: name, message });
    return this;
  }
  body(requestId) {
    const body = { type: PROBLEM_TYPES + this.kind, title: this.title, status: this.status, detail: this.detail, request_id: requestId };
    if (this.errors.length) body.errors = this.errors;
    return body;
  }
}

/** Whether the granted permission (`resource:action`, with `*` wildcards) covers `wanted`. */
export function permissionMatches(granted, wanted) {
  if (granted === "*" || granted === wanted) return true;
  const [resource, action] = split(granted);
  const [wantedResource, wantedAction] = split(wanted);
  if (resource === undefined || wantedResource === undefined) return false;
  if (resource === "*" && action === "*") return true;
  if (resource === "*") return action !== "" && action === wantedAction;
  if (action === "*") return resource !== "" && resource === wantedResource;
  return false;
}

function split(permission) {
  const at = permission.indexOf(":");
  return at < 0 ? [undefined, undefined] : [permission.slice(0, at), permission.slice(at + 1)];
}

/** Who is calling, as the host verified it: a plugin may trust these values. Each is read from
 * the host (the `context` interface) when first used. */
export class Context {
  #cache = new Map();
  #read(name, get) {
    if (!this.#cache.has(name)) this.#cache.set(name, get() ?? null);
    return this.#cache.get(name);
  }
  get requestId() { return this.#read("requestId", caller.requestId); }
  get userId() { return this.#read("userId", caller.userId); }
  get orgId() { return this.#read("orgId", caller.orgId); }
  get roles() { return this.#read("roles", caller.roles); }
  get permissions() { return this.#read("permissions", caller.permissions); }
  get sessionId() { return this.#read("sessionId", caller.sessionId); }
  get clientIp() { return this.#read("clientIp", caller.clientIp); }
  get caller() { return this.#read("caller", caller.caller); }
  has(permission) { return this.permissions.some((granted) => permissionMatches(granted, permission)); }
  /** Throws 401 on an anonymous request and 403 without `permission`. */
  require(permission) {
    if (this.userId === null && this.caller === null) throw Problem.unauthorized("sign in first");
    if (!this.has(permission)) throw Problem.forbidden(`this needs the \`${permission}\` permission`);
  }
  /** The caller's organization id; 403 outside any organization. */
  requireOrg() {
    if (this.orgId === null) throw Problem.forbidden("this needs a token scoped to an organization");
    return this.orgId;
  }
}

export class Request {
  constructor(raw) {
    this.method = raw.method;
    this.path = raw.path;
    this.queryString = raw.query;
    this.headers = Object.fromEntries(raw.headers);
    this.body = raw.body;
    this.context = new Context();
    this.query = Object.fromEntries(new URLSearchParams(raw.query));
  }
  header(name) { return this.headers[name.toLowerCase()]; }
  text() { return decoder.decode(this.body); }
  /** The body as JSON; 400 when it is not. */
  json() {
    try {
      return JSON.parse(this.text() || "null");
    } catch (error) {
      throw Problem.badRequest(`the body is not valid JSON: ${error.message}`);
    }
  }
}

export class Response {
  constructor(status = 200, body = new Uint8Array(), headers = []) {
    this.status = status;
    this.body = typeof body === "string" ? encoder.encode(body) : body;
    this.headers = headers;
  }
  static json(status, value) {
    return new Response(status, JSON.stringify(value, jsonValue), [["content-type", "application/json"]]);
  }
  static created(value, location) {
    const response = Response.json(201, value);
    if (location) response.headers.push(["location", location]);
    return response;
  }
  static noContent() { return new Response(204); }
}

/** BigInts (64-bit integers from the database) as numbers where that loses nothing. */
function jsonValue(_key, value) {
  if (typeof value !== "bigint") return value;
  return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
}

export class Plugin {
  /** `migrations`: per engine ("sqlite", "postgres"), the SQL of each migration in order. */
  constructor({ version, migrations = {} }) {
    this.version = version;
    this.migrations = migrations;
    this.routes = [];
  }
  /** Adds a route: `{name}` matches one path segment, passed to the handler in `params`. */
  route(method, pattern, handle) {
    this.routes.push({ method: method.toUpperCase(), segments: pattern.replace(/^\/|\/$/g, "").split("/"), handle });
    return this;
  }
  get(pattern, handle) { return this.route("GET", pattern, handle); }
  post(pattern, handle) { return this.route("POST", pattern, handle); }
  put(pattern, handle) { return this.route("PUT", pattern, handle); }
  patch(pattern, handle) { return this.route("PATCH", pattern, handle); }
  delete(pattern, handle) { return this.route("DELETE", pattern, handle); }

  dispatch(request) {
    const path = request.path.replace(/^\/|\/$/g, "").split("/");
    let allowed = false;
    for (const route of this.routes) {
      const params = match(route.segments, path);
      if (params === null) continue;
      if (route.method !== request.method) {
        allowed = true;
        continue;
      }
      return toResponse(route.handle(request, params));
    }
    if (allowed) throw Problem.methodNotAllowed(`${request.method} is not allowed here`);
    throw Problem.notFound(`no route for ${request.path}`);
  }

  handle(raw) {
    const request = new Request(raw);
    let response;
    try {
      response = this.dispatch(request);
    } catch (error) {
      const problem = error instanceof Problem ? error : Problem.internal(String(error?.stack ?? error));
      if (problem.status >= 500) console.error(problem.message);
      response = new Response(problem.status, JSON.stringify(problem.body(request.context.requestId)), [
        ["content-type", "application/problem+json"],
      ]);
    }
    return { status: response.status, headers: response.headers, body: response.body };
  }

  /** The `endpoint` and `manifest` exports componentize-js looks for. */
  exports() {
    return {
      endpoint: { handle: (request) => this.handle(request) },
      manifest: {
        version: () => this.version,
        migrations: (dialect) =>
          (this.migrations[dialect === "postgres" ? "postgres" : "sqlite"] ?? []).map((sql, at) => ({
            id: at + 1,
            name: `migration ${at + 1}`,
            sql,
          })),
      },
    };
  }
}

function match(segments, path) {
  if (segments.length !== path.length) return null;
  const params = {};
  for (let at = 0; at < segments.length; at++) {
    const want = segments[at];
    if (want.startsWith("{") && want.endsWith("}")) {
      if (!path[at]) return null;
      params[want.slice(1, -1)] = decodeURIComponent(path[at]);
    } else if (want !== path[at]) {
      return null;
    }
  }
  return params;
}

function toResponse(value) {
  if (value === undefined || value === null) return Response.noContent();
  if (value instanceof Response) return value;
  return Response.json(200, value);
}

/** The `database` capability: one transaction per request, committed on a status below 500. */
export const db = {
  /** Rows as objects of column name to value (null, number or BigInt, string, Uint8Array, boolean). */
  query(sql, params = []) {
    let result;
    try {
      result = database.query(sql, params.map(toValue));
    } catch (error) {
      throw databaseProblem(error);
    }
    return result.rows.map((row) => Object.fromEntries(result.columns.map((column, at) => [column, fromValue(row[at])])));
  },
  /** The number of rows changed. */
  execute(sql, params = []) {
    try {
      return Number(database.execute(sql, params.map(toValue)));
    } catch (error) {
      throw databaseProblem(error);
    }
  },
};

function toValue(value) {
  if (value === null || value === undefined) return { tag: "null" };
  if (typeof value === "boolean") return { tag: "boolean", val: value };
  if (typeof value === "bigint") return { tag: "integer", val: value };
  if (typeof value === "number") return Number.isInteger(value) ? { tag: "integer", val: BigInt(value) } : { tag: "real", val: value };
  if (typeof value === "string") return { tag: "text", val: value };
  if (value instanceof Uint8Array) return { tag: "blob", val: value };
  throw new TypeError(`cannot bind a ${typeof value} to a statement`);
}

function fromValue(value) {
  switch (value.tag) {
    case "null": return null;
    case "integer": return Number.isSafeInteger(Number(value.val)) ? Number(value.val) : value.val;
    default: return value.val;
  }
}

function databaseProblem(error) {
  const cause = error?.payload ?? error;
  if (cause?.tag === "constraint") return Problem.conflict("the request conflicts with existing data");
  return Problem.internal(`database: ${cause?.tag ?? ""} ${cause?.val ?? error}`);
}

/** The `config` capability: the `[config]` table of the plugin's policy, typed. */
export const config = {
  get(key, fallback = undefined) { return settings.get(key) ?? fallback; },
  getInt(key, fallback = undefined) { const value = settings.get(key); return value === undefined ? fallback : parseInt(value, 10); },
  getFloat(key, fallback = undefined) { const value = settings.get(key); return value === undefined ? fallback : parseFloat(value); },
  getBool(key, fallback = undefined) { const value = settings.get(key); return value === undefined ? fallback : value === "true"; },
};

/** The `log` capability; without the grant, `console.log` reaches the same log (as stdout). */
export const log = {
  debug(message) { logging.log("debug", message); },
  info(message) { logging.log("info", message); },
  warn(message) { logging.log("warn", message); },
  error(message) { logging.log("error", message); },
};
