use super::*;
use crate::bindings::handler::RequestContext;

fn ctx() -> EventsCtx {
    let mut ctx = EventsCtx::new(
        "org".into(),
        Arc::new(BTreeSet::from(["org.member.events".to_string()])),
        true,
    );
    ctx.serve(&Request {
        method: "POST".into(),
        path: "/org/api/members".into(),
        query: String::new(),
        headers: vec![("user-agent".into(), "curl/8.5".into())],
        body: Vec::new(),
        context: RequestContext {
            request_id: "req-1".into(),
            user_id: Some("user-1".into()),
            org_id: Some("org-1".into()),
            roles: Vec::new(),
            permissions: Vec::new(),
            session_id: None,
            client_ip: Some("203.0.113.9".into()),
            caller: None,
        },
    });
    ctx
}

fn event(topic: &str, kind: &str, data: &str) -> Published {
    Published {
        topic: topic.into(),
        type_: kind.into(),
        subject: "user-2".into(),
        data: data.into(),
        org_id: None,
    }
}

#[test]
fn topics_are_plain_names_and_never_a_dead_letter_topic() {
    assert!(valid_topic("org.member.events"));
    assert!(valid_topic("crm_contacts-v2"));
    for bad in ["", "Org.Events", "a b", "org.member.events.dlq", "x/y"] {
        assert!(!valid_topic(bad), "{bad:?}");
    }
}

#[test]
fn an_event_carries_who_caused_it_from_the_verified_request() {
    let mut ctx = ctx();
    let id = ctx
        .queue(event(
            "org.member.events",
            "member.added",
            r#"{"role":"member"}"#,
        ))
        .unwrap_or_default();
    let queued = ctx.take().unwrap_or_default();
    assert_eq!(queued.len(), 1);
    let event = &queued[0];
    assert_eq!(event.id(), id);
    assert_eq!(event.key, "org-1");
    let attribute = |name: &str| event.attributes.get(name).map(String::as_str);
    assert_eq!(attribute("specversion"), Some("1.0"));
    assert_eq!(attribute("source"), Some("/truevalue/org"));
    assert_eq!(attribute("type"), Some("member.added"));
    assert_eq!(attribute("subject"), Some("user-2"));
    assert_eq!(attribute("orgid"), Some("org-1"));
    assert_eq!(attribute("actorid"), Some("user-1"));
    assert_eq!(attribute("requestid"), Some("req-1"));
    assert_eq!(attribute("clientip"), Some("203.0.113.9"));
    assert_eq!(attribute("useragent"), Some("curl/8.5"));
    assert!(ctx.take().unwrap_or_default().is_empty(), "taken once");
}

#[test]
fn a_component_may_name_the_organization_it_just_created() {
    let mut ctx = ctx();
    let mut created = event("org.member.events", "org.created", "{}");
    created.org_id = Some("org-new".into());
    assert!(ctx.queue(created).is_ok());
    let queued = ctx.take().unwrap_or_default();
    assert_eq!(queued[0].key, "org-new");
    assert_eq!(
        queued[0].attributes.get("orgid").map(String::as_str),
        Some("org-new")
    );
}

#[test]
fn unlisted_topics_malformed_types_and_data_that_is_not_json_are_refused() {
    let mut ctx = ctx();
    let refused = [
        event("auth.user.events", "user.registered", "{}"),
        event("org.member.events", "Member Added", "{}"),
        event("org.member.events", "member.added", "{not json"),
        event(
            "org.member.events",
            "member.added",
            &format!("\"{}\"", "x".repeat(MAX_DATA_BYTES)),
        ),
    ];
    for published in refused {
        let error = ctx.queue(published).err().unwrap_or_default();
        assert!(!error.is_empty());
    }
    assert!(
        ctx.take().unwrap_or_default().is_empty(),
        "nothing refused is queued"
    );
}

#[test]
fn a_request_past_the_limit_publishes_none_of_its_events() {
    let mut ctx = ctx();
    for _ in 0..MAX_PER_REQUEST {
        assert!(
            ctx.queue(event("org.member.events", "member.added", "{}"))
                .is_ok()
        );
    }
    let error = ctx
        .queue(event("org.member.events", "member.added", "{}"))
        .err()
        .unwrap_or_default();
    assert!(error.contains("at most 100"), "{error}");
    assert!(
        ctx.take().is_err(),
        "the request fails rather than commit without its events"
    );
}

#[test]
fn only_an_approved_component_publishes_for_another_organization() {
    let mut ctx = ctx();
    ctx.any_org = false;
    let mut own = event("org.member.events", "member.added", "{}");
    own.org_id = Some("org-1".into());
    assert!(ctx.queue(own).is_ok(), "the request's own organization");
    let mut other = event("org.member.events", "member.added", "{}");
    other.org_id = Some("org-2".into());
    let error = ctx.queue(other).err().unwrap_or_default();
    assert!(error.contains("trusted_components"), "{error}");
}
