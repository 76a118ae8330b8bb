//! The example component's guest book as a client meets it: ids that sort in signing order,
//! and a list read a page at a time with `?limit=` and `?cursor=`, on both engines.

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};
use crate::on_both_engines;

async fn app(engine: Engine) -> TestApp {
    Spawn::new(
        engine,
        vec![Policy::new(
            "hello",
            "hello",
            "hello",
            "capabilities = [\"database\", \"config\"]",
        )],
    )
    .start()
    .await
}

async fn sign(app: &TestApp, name: &str) -> Value {
    let response = app
        .post_json(
            "/hello/guestbook",
            &json!({ "name": name, "message": "hi" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let entry: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/hello/guestbook/{}", entry["id"].as_str().unwrap())
    );
    entry
}

async fn page(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/hello/guestbook?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

async fn paging_returns_every_entry_once_in_signing_order(engine: Engine) {
    let app = app(engine).await;
    let mut signed = Vec::new();
    for name in ["Ada", "Bo", "Cy", "Di", "Ed"] {
        let entry = sign(&app, name).await;
        let id = uuid::Uuid::parse_str(entry["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7, "{id}");
        signed.push(entry);
    }

    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = page(&app, &query).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "the cursor never ends: {page}");
    }
    assert_eq!(pages, 3, "2 + 2 + 1 entries");
    assert_eq!(seen, signed, "every entry once, in signing order");

    // Without a limit, one page of up to 50 holds them all.
    let all = page(&app, "").await;
    assert_eq!(all, json!({ "items": signed, "next_cursor": null }));
    // A page that ends exactly at the last entry has no next page.
    let exact = page(&app, "limit=5").await;
    assert_eq!(exact["items"].as_array().unwrap().len(), 5);
    assert_eq!(exact["next_cursor"], Value::Null);
}
on_both_engines!(paging_returns_every_entry_once_in_signing_order);

async fn a_bad_limit_or_cursor_is_a_422_problem_naming_it(engine: Engine) {
    let app = app(engine).await;
    sign(&app, "Ada").await;
    sign(&app, "Bo").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=", "cursor"),
        ("limit=1&cursor=%27%3B%20DROP%20TABLE%20guestbook", "cursor"),
    ] {
        let body = problem(app.get(&format!("/hello/guestbook?{query}")).await, 422).await;
        assert_eq!(
            body["type"], "https://truevalue.dev/problems/validation",
            "{query}"
        );
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{query}: {body}"
        );
    }

    // A real cursor, edited by hand, is refused instead of starting somewhere else.
    let first = page(&app, "limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let mut edited: Vec<char> = cursor.chars().collect();
    edited[3] = if edited[3] == 'A' { 'B' } else { 'A' };
    let edited: String = edited.into_iter().collect();
    problem(
        app.get(&format!("/hello/guestbook?limit=1&cursor={edited}"))
            .await,
        422,
    )
    .await;
    assert_eq!(
        page(&app, "limit=200").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
on_both_engines!(a_bad_limit_or_cursor_is_a_422_problem_naming_it);

async fn a_bad_entry_names_the_field(engine: Engine) {
    let app = app(engine).await;
    let body = problem(
        app.post_json("/hello/guestbook", &json!({ "name": " ", "message": "" }))
            .await,
        422,
    )
    .await;
    assert_eq!(
        body["errors"],
        json!([{ "field": "name", "message": "must be 1 to 100 characters" }])
    );
    assert_eq!(body["detail"], "`name` must be 1 to 100 characters");
    assert_eq!(page(&app, "").await["items"], json!([]));
}
on_both_engines!(a_bad_entry_names_the_field);
