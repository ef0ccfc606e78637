//! `WWW-Authenticate` parsing on arbitrary bytes: never panics; every challenge it returns
//! prints (`Display`) to a header that parses back to that same challenge, and the bearer, basic
//! and scope readers never panic either.
#![no_main]

use hoist_registry::auth::challenge::{parse_challenges, parse_challenges_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &[u8]| {
    let Ok(challenges) = parse_challenges_bytes(header) else {
        return;
    };
    for challenge in &challenges {
        let printed = challenge.to_string();
        let reparsed = parse_challenges(&printed);
        assert_eq!(
            reparsed.as_deref(),
            Ok(std::slice::from_ref(challenge)),
            "{printed:?}"
        );
        if let Ok(bearer) = challenge.bearer()
            && let Ok(scopes) = bearer.scopes()
        {
            for scope in scopes {
                let printed = scope.to_string();
                assert_eq!(printed.parse().as_ref(), Ok(&scope), "{printed:?}");
            }
        }
        let _ = challenge.basic();
    }
});
