//! stackpin: a GitOps reconciler for hosts that run Docker Compose stacks.
//!
//! The decision logic (`desired`, `gate`, `plan`) is pure and tested in
//! memory; everything that touches the host or the engine sits at the edges
//! (`release`, `engine`, `reconcile`, `cli`).

pub mod backup;
pub mod cli;
pub mod commit_status;
pub mod config;
pub mod control;
pub mod daemon;
pub mod desired;
pub mod diff;
pub mod dotenv;
pub mod engine;
pub mod events;
pub mod fault;
pub mod forge;
pub mod fsutil;
pub mod gate;
pub mod history;
pub mod host;
pub mod layout;
pub mod metrics;
pub mod notify;
pub mod observed;
pub mod outcome;
pub mod page;
pub mod plan;
pub mod policy;
pub mod promote;
pub mod propose;
pub mod publish;
pub mod reconcile;
pub mod release;
pub mod rollback;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod smoke;
pub mod soak;
pub mod source;
pub mod startup;
pub mod state;
pub mod status;
pub mod trust;
pub mod verified;
