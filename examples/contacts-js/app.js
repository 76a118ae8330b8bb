// Contacts with deals: a CRM plugin in JavaScript, on the TrueValue SDK (`sdk/js`).
//
// Every route is a tenant route: the host serves it only for a token scoped to an organization,
// and every statement below is scoped by that organization's id.

import { Plugin, Problem, Response, db } from "../../sdk/js/truevalue.js";

// The same SQL as the Rust and Python examples: any of the three can replace another.
const SCHEMA = [
  "CREATE TABLE contacts (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, UNIQUE (org_id, email))",
  "CREATE TABLE deals (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, contact_id INTEGER NOT NULL REFERENCES contacts (id), title TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
];

const app = new Plugin({
  version: "1.0.0",
  migrations: {
    sqlite: SCHEMA,
    postgres: SCHEMA.map((sql) => sql.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")),
  },
});

app.get("/contacts/api/contacts", (request) => {
  const org = request.context.requireOrg();
  request.context.require("contacts:read");
  return { items: db.query("SELECT id, name, email FROM contacts WHERE org_id = $1 ORDER BY id", [org]) };
});

app.post("/contacts/api/contacts", (request) => {
  const org = request.context.requireOrg();
  request.context.require("contacts:write");
  const body = request.json();
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw Problem.badRequest("the body must be a JSON object");
  }
  const { name, email } = body;
  let problem = null;
  if (typeof name !== "string" || name.trim().length < 1 || name.trim().length > 200) {
    problem = Problem.field("name", "must be between 1 and 200 characters");
  }
  if (typeof email !== "string" || !email.includes("@")) {
    problem = (problem ?? Problem.unprocessable("")).andField("email", "must be an email address");
  }
  if (problem) throw problem;
  let rows;
  try {
    rows = db.query("INSERT INTO contacts (org_id, name, email) VALUES ($1, $2, $3) RETURNING id", [
      org,
      name.trim(),
      email.toLowerCase(),
    ]);
  } catch (error) {
    if (error instanceof Problem && error.status === 409) {
      throw Problem.conflict(`a contact with the email ${email} exists`);
    }
    throw error;
  }
  const contact = { id: rows[0].id, name: name.trim(), email: email.toLowerCase() };
  console.log(`contact ${contact.id} created`);
  return Response.created(contact, `/contacts/api/contacts/${contact.id}`);
});

function findContact(org, contactId) {
  if (!/^[0-9]+$/.test(contactId)) throw Problem.notFound(`no contact ${contactId}`);
  const rows = db.query("SELECT id, name, email FROM contacts WHERE org_id = $1 AND id = $2", [org, Number(contactId)]);
  if (rows.length === 0) throw Problem.notFound(`no contact ${contactId}`);
  return rows[0];
}

app.get("/contacts/api/contacts/{contactId}", (request, { contactId }) => {
  const org = request.context.requireOrg();
  request.context.require("contacts:read");
  const contact = findContact(org, contactId);
  contact.deals = db.query(
    "SELECT id, title, amount_cents FROM deals WHERE org_id = $1 AND contact_id = $2 ORDER BY id",
    [org, contact.id],
  );
  return contact;
});

app.post("/contacts/api/contacts/{contactId}/deals", (request, { contactId }) => {
  const org = request.context.requireOrg();
  request.context.require("contacts:write");
  const contact = findContact(org, contactId);
  const body = request.json() ?? {};
  const title = typeof body.title === "string" ? body.title.trim() : "";
  if (!title) throw Problem.field("title", "must not be empty");
  const amount = body.amount_cents;
  if (!Number.isInteger(amount) || amount < 0) {
    throw Problem.field("amount_cents", "must be a whole number of cents, 0 or more");
  }
  const rows = db.query(
    "INSERT INTO deals (org_id, contact_id, title, amount_cents) VALUES ($1, $2, $3, $4) RETURNING id",
    [org, contact.id, title, amount],
  );
  return Response.created({ id: rows[0].id, title, amount_cents: amount });
});

export const { endpoint, manifest } = app.exports();
