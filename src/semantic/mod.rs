//! The semantic tier: serving a stored answer for a question that means the same as the one
//! it was stored for. See `docs/semantic.md`.

pub mod guard;
