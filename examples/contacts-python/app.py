"""Contacts with deals: a CRM plugin in Python, on the TrueValue SDK (`sdk/python`).

Every route is a tenant route: the host serves it only for a token scoped to an organization,
and every statement below is scoped by that organization's id.
"""

from truevalue import Plugin, Problem, Response, db

# The same SQL as the Rust and JavaScript examples: any of the three can replace another.
SCHEMA = [
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, UNIQUE (org_id, email))",
    "CREATE TABLE deals (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, contact_id INTEGER NOT NULL REFERENCES contacts (id), title TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
]

app = Plugin(
    version="1.0.0",
    migrations={
        "sqlite": SCHEMA,
        "postgres": [sql.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY", 1) for sql in SCHEMA],
    },
)


@app.get("/contacts/api/contacts")
def list_contacts(request):
    org = request.context.require_org()
    request.context.require("contacts:read")
    rows = db.query(
        "SELECT id, name, email FROM contacts WHERE org_id = $1 ORDER BY id", [org]
    )
    return {"items": rows}


@app.post("/contacts/api/contacts")
def create_contact(request):
    org = request.context.require_org()
    request.context.require("contacts:write")
    body = request.json()
    if not isinstance(body, dict):
        raise Problem.bad_request("the body must be a JSON object")
    name, email = body.get("name"), body.get("email")
    problem = None
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        problem = Problem.field("name", "must be between 1 and 200 characters")
    if not isinstance(email, str) or "@" not in email:
        problem = (problem or Problem.unprocessable("")).and_field(
            "email", "must be an email address"
        )
    if problem:
        raise problem
    try:
        rows = db.query(
            "INSERT INTO contacts (org_id, name, email) VALUES ($1, $2, $3) RETURNING id",
            [org, name.strip(), email.lower()],
        )
    except Problem as error:
        if error.status == 409:
            raise Problem.conflict(f"a contact with the email {email} exists") from None
        raise
    contact = {"id": rows[0]["id"], "name": name.strip(), "email": email.lower()}
    print(f"contact {contact['id']} created")
    return Response.created(contact, f"/contacts/api/contacts/{contact['id']}")


def _contact(org, contact_id):
    if not contact_id.isdigit():
        raise Problem.not_found(f"no contact {contact_id}")
    rows = db.query(
        "SELECT id, name, email FROM contacts WHERE org_id = $1 AND id = $2",
        [org, int(contact_id)],
    )
    if not rows:
        raise Problem.not_found(f"no contact {contact_id}")
    return rows[0]


@app.get("/contacts/api/contacts/{contact_id}")
def show_contact(request, contact_id):
    org = request.context.require_org()
    request.context.require("contacts:read")
    contact = _contact(org, contact_id)
    contact["deals"] = db.query(
        "SELECT id, title, amount_cents FROM deals WHERE org_id = $1 AND contact_id = $2 ORDER BY id",
        [org, contact["id"]],
    )
    return contact


@app.post("/contacts/api/contacts/{contact_id}/deals")
def create_deal(request, contact_id):
    org = request.context.require_org()
    request.context.require("contacts:write")
    contact = _contact(org, contact_id)
    body = request.json()
    title = body.get("title") if isinstance(body, dict) else None
    amount = body.get("amount_cents") if isinstance(body, dict) else None
    if not isinstance(title, str) or not title.strip():
        raise Problem.field("title", "must not be empty")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise Problem.field("amount_cents", "must be a whole number of cents, 0 or more")
    rows = db.query(
        "INSERT INTO deals (org_id, contact_id, title, amount_cents) VALUES ($1, $2, $3, $4) RETURNING id",
        [org, contact["id"], title.strip(), amount],
    )
    return Response.created({"id": rows[0]["id"], "title": title.strip(), "amount_cents": amount})


Endpoint, Manifest = app.exports()
