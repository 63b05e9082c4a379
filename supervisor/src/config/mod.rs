//! Configuration: `appvisor.toml` and `apps.d/NAME.toml`.
//!
//! Three layers, as DESIGN.md asks: `raw` mirrors the files exactly and
//! rejects unknown keys; validation turns raw values into [`AppSpec`] and
//! gathers every error; `resolve` looks users and groups up behind the
//! [`resolve::UserDb`] trait. Only the `load_*` functions touch the file
//! system.

pub mod spec;

pub use spec::*;
