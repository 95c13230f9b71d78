//! Test support shared by the unit and integration tests: the rule for an input that a test
//! needs and a checkout may lack (Chromium, the shared datasets, qemu).
//!
//! CI (`CI` set, as `.ci/run` is run) provides every such input, so there a missing one is a
//! failure that names it and says how CI provides it; elsewhere the test skips itself with a
//! printed note. A test that skips silently under CI could never fail.

/// Whether the tests run under CI (the `CI` environment variable is set).
pub fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `input` if present. If absent: panics under CI saying that `what` is missing and how CI
/// provides it (`ci_provides`); otherwise prints a skip note and returns `None`, and the test
/// returns early:
///
/// `let Some(bin) = require(chromium(), "chromium", ".ci/run installs it") else { return };`
#[track_caller]
pub fn require<T>(input: Option<T>, what: &str, ci_provides: &str) -> Option<T> {
    if input.is_some() {
        return input;
    }
    match on_missing(ci(), what, ci_provides) {
        Ok(skip) => println!("{skip}"),
        Err(failure) => panic!("{failure}"),
    }
    None
}

/// The rule itself: `Err(failure message)` under CI, else `Ok(skip note)`.
fn on_missing(ci: bool, what: &str, ci_provides: &str) -> Result<String, String> {
    if ci {
        Err(format!("CI is set but {what} is missing: {ci_provides}"))
    } else {
        Ok(format!("skipped: {what} is missing ({ci_provides}; with CI set this test fails)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_input_is_returned() {
        assert_eq!(require(Some(3), "x", "y"), Some(3));
    }

    #[test]
    fn a_missing_input_fails_under_ci_and_skips_elsewhere_naming_it_and_its_provider() {
        let (what, how) = ("chromium", "apt-get install chromium");
        assert_eq!(
            on_missing(true, what, how),
            Err("CI is set but chromium is missing: apt-get install chromium".into())
        );
        let skip = on_missing(false, what, how).expect("a skip outside CI");
        assert!(skip.starts_with("skipped: chromium is missing (apt-get install chromium"), "{skip}");
    }
}
