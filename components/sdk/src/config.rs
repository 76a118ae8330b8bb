//! Settings from the `[config]` table of the component's policy.

use std::str::FromStr;

use crate::Problem;
use crate::bindings::truevalue::platform::config as raw;

/// The value of `key`, if the policy sets it.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// The value of `key` parsed as `T` (surrounding spaces ignored), if the policy sets it. A value
/// that does not parse is the operator's mistake, not the client's: a 500 whose detail, in the
/// host's log, names the key.
pub fn get_as<T: FromStr>(key: &str) -> Result<Option<T>, Problem> {
    get(key).map(|value| parse(key, &value)).transpose()
}

fn parse<T: FromStr>(key: &str, value: &str) -> Result<T, Problem> {
    value.trim().parse().map_err(|_| {
        Problem::internal(format!(
            "the policy's config `{key}` = {value:?} is not a valid {}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_does_not_parse_is_a_500_naming_the_key() {
        assert_eq!(parse::<i64>("lockout_seconds", " 60 ").unwrap(), 60);
        let problem = parse::<i64>("lockout_seconds", "soon").unwrap_err();
        assert_eq!(problem.status, 500);
        assert!(
            problem.detail.contains("`lockout_seconds`"),
            "{}",
            problem.detail
        );
    }
}
