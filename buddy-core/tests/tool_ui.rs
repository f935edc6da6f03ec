//! Compile errors of `#[tool]` misuse, one per file in `tests/ui_tool/`.
//! Regenerate the `.stderr` snapshots with `TRYBUILD=overwrite`.

#[test]
fn tool_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui_tool/*.rs");
}
