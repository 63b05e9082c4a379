#![forbid(unsafe_code)]
//! The command line of `appctl` as a library, so that the man pages and
//! shell completions (`cargo xtask`) are generated from the very
//! definitions the binary parses with. Everything else of `appctl` lives in
//! the binary.

pub mod cli;
