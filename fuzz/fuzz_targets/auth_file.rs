//! An `--auth` file of any bytes is read or refused with an error, never a panic; one that is
//! read answers every right on any name without panicking (libFuzzer's timeout catches a
//! glob match that blows up).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reg::server::auth::{Auth, Right};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line, if any, is a name to check; the rest is the file.
    let (name, file) = text.split_once('\n').unwrap_or(("", text));
    if let Ok(auth) = Auth::from_toml(file) {
        for right in [Right::Read, Right::Provide, Right::Request, Right::Take, Right::Admin] {
            let _ = auth.anonymous().can(right, name);
        }
        let _ = auth.principals();
    }
});
