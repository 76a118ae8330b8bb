//! Settings from the `[config]` table of the component's policy.

use crate::bindings::truevalue::platform::config as raw;

/// The value of `key`, if the policy sets it.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}
