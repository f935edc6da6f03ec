//! Compile tests of `#[workflow]`: each file in `tests/ui` holds one mistake, and its
//! `.stderr` the error the macro reports for it (regenerate with `TRYBUILD=overwrite`); the
//! expansion snapshot in `tests/expand` and its input must compile.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/expand/*.rs");
}
