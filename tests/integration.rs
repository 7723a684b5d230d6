//! The integration tests, one binary (as ripgrep's `tests/`): each file of
//! `tests/` is a module here, `common/` their shared helpers. One binary
//! compiles `common` once and links once, where one binary per file
//! compiled it 35 times. Run one file's tests with a filter:
//! `cargo nextest run --test integration -E 'test(/^converge::/)'`.

mod common;

mod backup;
mod chaos;
mod cli_docs;
mod commit_status;
mod completion;
mod compose;
mod converge;
mod corpus;
mod daemon;
mod database;
mod engine;
mod faults;
mod fleet;
mod forgery;
mod fuzz_regressions;
mod gate;
mod hardened;
mod harness;
mod layering;
mod notify;
mod package;
mod page;
mod pin;
mod plan;
mod powers;
mod propose;
mod publish;
mod registry_auth;
mod regression;
mod remote;
mod rollback;
mod rollout;
mod secrets;
mod server;
mod snapshots;
mod source;
mod swarm;
mod touch;
mod trust;
mod validate;
