//! Compile-time behaviour of `#[idempotent]`: every misuse fails with the error recorded in
//! `tests/ui/fail/*.stderr`, and every supported use compiles.

#[test]
fn ui() {
    // One run, so trybuild builds the dependency graph once for both kinds of case.
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
