//! `#[tool]` expands cleanly where `Result`, `Option`, `Box`, `String` and `Value` are
//! shadowed, under `#![deny(warnings)]`.

#![deny(warnings)]
#![allow(dead_code, clippy::unwrap_used)]

mod shadowed {
    pub type Result<T> = core::result::Result<T, ()>;
    pub struct Option;
    pub struct Box;
    pub struct String;
    pub struct Value;
    pub struct Ok;
    pub struct Err;
}

#[allow(unused_imports)]
use shadowed::*;

/// Doubles a number.
#[buddy_macros::tool(crate = buddy_core)]
pub async fn double(
    /// The number.
    n: i64,
) -> i64 {
    n * 2
}

/// Fails on odd numbers.
#[buddy_macros::tool(crate = buddy_core)]
fn even(n: u32) -> std::result::Result<u32, std::io::Error> {
    if n.is_multiple_of(2) {
        std::result::Result::Ok(n)
    } else {
        std::result::Result::Err(std::io::Error::other("odd"))
    }
}

#[tokio::test]
async fn shadowed_names_do_not_break_the_expansion() {
    use buddy_core::tool::Tool;
    assert_eq!(
        Double.call(serde_json::json!({"n": 4})).await.unwrap(),
        serde_json::json!(8)
    );
    assert!(Even.call(serde_json::json!({"n": 3})).await.is_err());
}
