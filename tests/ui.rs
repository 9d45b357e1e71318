//! Compile-fail and compile-pass cases of `#[cached]`.
//!
//! `tests/ui/fail/*.rs`: one misuse each, with the exact diagnostic in the
//! matching `.stderr` (regenerate with `TRYBUILD=overwrite cargo test --test ui`
//! and read every changed file before keeping it).
//! `tests/ui/pass/*.rs`: every supported shape; each `main` runs against the
//! in-memory store and asserts on keys and hits.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
