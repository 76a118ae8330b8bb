//! Each request is one transaction on the component's own database, on both engines; no
//! component can reach another's data.

use serde_json::{Value, json};

use crate::helpers::{Engine, HOSTILE_LIMITS, Policy, Spawn, problem};
use crate::on_both_engines;

fn hello() -> Policy {
    Policy::new(
        "hello",
        "hello",
        "hello",
        "capabilities = [\"database\", \"config\"]",
    )
}

async fn notes(app: &crate::helpers::TestApp) -> Value {
    let response = app.get("/hostile/notes").await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["items"].clone()
}

async fn writes_commit_and_survive_a_crash(engine: Engine) {
    let mut app = Spawn::new(engine, vec![hello()]).start().await;
    let created = app
        .post_json(
            "/hello/guestbook",
            &json!({ "name": "Ada", "message": "first" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].clone();

    // Killed without warning, restarted on the same data: migrations are not applied twice
    // and the committed write is there.
    app.crash_and_restart().await;
    let list: Value = app.get("/hello/guestbook").await.json().await.unwrap();
    assert_eq!(
        list["items"],
        json!([{ "id": id, "name": "Ada", "message": "first" }])
    );
    let created = app
        .post_json(
            "/hello/guestbook",
            &json!({ "name": "Bo", "message": "second" }),
        )
        .await;
    assert_eq!(created.status(), 201);
}
on_both_engines!(writes_commit_and_survive_a_crash);

async fn a_failed_request_rolls_back_its_writes(engine: Engine) {
    let app = Spawn::new(
        engine,
        vec![Policy::new("hostile", "hostile", "hostile", HOSTILE_LIMITS)],
    )
    .start()
    .await;
    let post = |query: &'static str| {
        app.client
            .post(app.url(&format!("/hostile/notes?{query}")))
            .send()
    };
    assert_eq!(post("text=kept").await.unwrap().status(), 201);
    problem(post("text=answered-500&then=fail").await.unwrap(), 500).await;
    problem(post("text=trapped&then=trap").await.unwrap(), 500).await;
    problem(post("text=timed-out&then=loop").await.unwrap(), 504).await;
    assert_eq!(notes(&app).await, json!(["kept"]));
}
on_both_engines!(a_failed_request_rolls_back_its_writes);

async fn components_cannot_reach_each_others_data(engine: Engine) {
    let hostile = Policy::new("hostile", "hostile", "hostile", HOSTILE_LIMITS);
    let thief = Policy::new(
        "thief",
        "data_thief",
        "thief",
        "capabilities = [\"database\"]",
    );
    let app = Spawn::new(engine, vec![hostile, thief]).start().await;
    let created = app
        .client
        .post(app.url("/hostile/notes?text=secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let victim_file = app.data_dir.join("db/hostile.sqlite");
    let names: Vec<String> = app.get("/thief").await.json().await.unwrap();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let response = app
            .client
            .get(app.url("/thief/attempt"))
            .query(&[
                ("name", name.as_str()),
                ("victim_file", &victim_file.display().to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let result: Value = response.json().await.unwrap();
        match name.as_str() {
            "own data" => assert_eq!(result["ok"], true, "the control works: {result}"),
            _ => assert_eq!(result["ok"], false, "{name} must be refused: {result}"),
        }
        let error = result["error"].as_str().unwrap_or_default();
        if name.starts_with("attach")
            || name.contains("transaction")
            || name.contains("role") && !name.contains("function")
        {
            assert!(
                error.contains("AccessDenied"),
                "{name} is refused as access-denied: {error}"
            );
        }
    }
    assert_eq!(
        notes(&app).await,
        json!(["secret"]),
        "nothing was written by the thief"
    );
}
on_both_engines!(components_cannot_reach_each_others_data);

#[tokio::test]
async fn postgres_gives_each_component_its_own_schema_and_role() {
    let app = Spawn::new(Engine::Postgres, vec![hello()]).start().await;
    assert_eq!(
        app.post_json(
            "/hello/guestbook",
            &json!({ "name": "Ada", "message": "hi" })
        )
        .await
        .status(),
        201
    );

    let pool = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'hello' AND tablename = 'guestbook'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        owner,
        format!("{database}_hello"),
        "the table belongs to the component's role"
    );
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(&owner)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!superuser);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM truevalue_host.migrations WHERE component = 'hello'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 2, "each of the two migrations is recorded once");
}
