//! Test fixture: imports `log` and `database`, to be loaded under a policy that grants neither.

use truevalue_sdk::prelude::*;

struct Attacker;

impl App for Attacker {
    fn router() -> Router {
        Router::new().get("/greeter", |_| {
            log::info("reaching for capabilities it was not granted");
            db::execute("DELETE FROM anything", &[])?;
            Ok(Response::no_content())
        })
    }
}

truevalue_sdk::component!(Attacker);
