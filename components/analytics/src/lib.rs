//! Analytics: per-organization usage, built from the platform's events (its policy's
//! `[subscriptions]`). Each event is counted once, by id, in the transaction that records it,
//! so a redelivered event changes nothing.
//!
//! - logins per day: `user.logged_in` events of the organization;
//! - active users over 1, 7 and 30 days: distinct actors of any of the organization's events;
//! - signups per day: members who joined (`member.added`: the creator, invitees, added users);
//! - members: joined minus removed (`member.removed`), none after `org.deleted`.
//!
//! `GET /analytics/api/dashboard` shows the caller's organization (permission `analytics:read`).

use serde_json::json;
use truevalue_sdk::prelude::*;

/// Days the per-day series cover, today included.
const SERIES_DAYS: i64 = 30;
const DAY: i64 = 86_400;

struct Analytics;

impl App for Analytics {
    fn router() -> Router {
        Router::new()
            .post("/analytics/internal/events", record)
            .get("/analytics/api/dashboard", dashboard)
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![Migration {
            id: 1,
            name: "counts",
            sql: "CREATE TABLE counted (id TEXT PRIMARY KEY);
                  CREATE TABLE daily (org_id TEXT NOT NULL, day TEXT NOT NULL,
                      metric TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (org_id, day, metric));
                  CREATE TABLE active (org_id TEXT NOT NULL, user_id TEXT NOT NULL,
                      day TEXT NOT NULL, PRIMARY KEY (org_id, user_id, day));
                  CREATE TABLE members (org_id TEXT NOT NULL, user_id TEXT NOT NULL,
                      PRIMARY KEY (org_id, user_id))",
        }]
    }
}

/// The day (`YYYY-MM-DD`) of an RFC 3339 time.
fn day_of(time: &str) -> Option<&str> {
    time.get(..10)
        .filter(|day| day.as_bytes().get(4) == Some(&b'-'))
}

/// One delivered event (CloudEvents HTTP binary binding), counted unless it was already.
fn record(req: &Request) -> Result<Response, Problem> {
    let header = |name: &str| req.header(name).unwrap_or_default().to_string();
    let id = header("ce-id");
    let org_id = header("ce-orgid");
    if id.is_empty() || org_id.is_empty() {
        // Nothing to count outside an organization.
        return Ok(Response::no_content());
    }
    let first = db::execute(
        "INSERT INTO counted (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
        &[id.as_str().into()],
    )?;
    if first == 0 {
        return Ok(Response::no_content());
    }
    let time = header("ce-time");
    let Some(day) = day_of(&time) else {
        return Ok(Response::no_content());
    };
    let actor = header("ce-actorid");
    if !actor.is_empty() {
        db::execute(
            "INSERT INTO active (org_id, user_id, day) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[org_id.as_str().into(), actor.as_str().into(), day.into()],
        )?;
    }
    let subject = header("ce-subject");
    match header("ce-type").as_str() {
        "user.logged_in" => bump(&org_id, day, "logins")?,
        "member.added" => {
            bump(&org_id, day, "signups")?;
            db::execute(
                "INSERT INTO members (org_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[org_id.as_str().into(), subject.as_str().into()],
            )?;
        }
        "member.removed" => {
            db::execute(
                "DELETE FROM members WHERE org_id = $1 AND user_id = $2",
                &[org_id.as_str().into(), subject.as_str().into()],
            )?;
        }
        "org.deleted" => {
            db::execute(
                "DELETE FROM members WHERE org_id = $1",
                &[org_id.as_str().into()],
            )?;
        }
        _ => {}
    }
    Ok(Response::no_content())
}

fn bump(org_id: &str, day: &str, metric: &str) -> Result<(), Problem> {
    db::execute(
        "INSERT INTO daily (org_id, day, metric, n) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (org_id, day, metric) DO UPDATE SET n = daily.n + 1",
        &[org_id.into(), day.into(), metric.into()],
    )?;
    Ok(())
}

/// `GET /analytics/api/dashboard`: `{org_id, logins: [{day, count}], signups: [{day, count}],
/// active_users: {day_1, day_7, day_30}, members}`; the series cover the last 30 days (days
/// without any are left out).
fn dashboard(req: &Request) -> Result<Response, Problem> {
    let caller = req.require("analytics:read")?;
    let org = caller.org_id.as_str();
    let now = truevalue_sdk::time::now();
    let since = |days: i64| truevalue_sdk::time::rfc3339(now - (days - 1) * DAY)[..10].to_string();
    let series = |metric: &str| -> Result<Vec<serde_json::Value>, Problem> {
        let rows = db::query(
            "SELECT day, n FROM daily WHERE org_id = $1 AND metric = $2 AND day >= $3 ORDER BY day",
            &[org.into(), metric.into(), since(SERIES_DAYS).into()],
        )?;
        rows.iter()
            .map(|row| {
                Ok(json!({ "day": row.get::<String>("day")?, "count": row.get::<i64>("n")? }))
            })
            .collect()
    };
    let active = |days: i64| -> Result<i64, Problem> {
        let rows = db::query(
            "SELECT COUNT(DISTINCT user_id) AS n FROM active WHERE org_id = $1 AND day >= $2",
            &[org.into(), since(days).into()],
        )?;
        Ok(match rows.first() {
            Some(row) => row.get::<i64>("n")?,
            None => 0,
        })
    };
    let members = db::query(
        "SELECT COUNT(*) AS n FROM members WHERE org_id = $1",
        &[org.into()],
    )?;
    let members: i64 = match members.first() {
        Some(row) => row.get("n")?,
        None => 0,
    };
    Response::json(
        200,
        &json!({
            "org_id": org,
            "logins": series("logins")?,
            "signups": series("signups")?,
            "active_users": { "day_1": active(1)?, "day_7": active(7)?, "day_30": active(30)? },
            "members": members,
        }),
    )
}

truevalue_sdk::component!(Analytics);

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn an_events_day_is_the_date_of_its_time() {
        assert_eq!(day_of("2026-12-01T00:47:52.25933275Z"), Some("2026-12-01"));
        assert_eq!(day_of("yesterday"), None);
        assert_eq!(day_of(""), None);
    }
}
