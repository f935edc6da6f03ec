//! Code generation. Nothing here can fail: every check ran in `validate`.

pub(crate) mod impl_;
pub(crate) mod struct_;
