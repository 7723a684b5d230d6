//! Shared helpers for stackpin's integration tests.
//!
//! Every test builds a [`TestHost`]: its own temp dir with a host root (what
//! `/srv` is in production), a desired-state git repository and a state dir; a
//! short unique prefix for compose project (stack) names; loopback ports that
//! it never hands out twice. [`TestHost::cmd`] runs the real `stackpin` binary
//! against that host, and a failed assertion on its output panics with the
//! command line, the exit code, both streams and a listing of the root, so a
//! CI log alone explains the failure. Dropping the host removes every
//! container, network and volume of the stacks it named.
//!
//! Tests that touch the engine call [`Fixtures::require`]: the real components
//! that `scripts/fixtures.sh` set up (a Docker engine, a compose
//! implementation, a registry on 127.0.0.1 and test images addressed by
//! digest). Modelled on ripgrep's `tests/util.rs` and uv's `TestContext`.
//!
//! One file per kind of helper, re-exported here (`common::TestHost`):
//! `fixtures` (the real components, the compose flavour, the host config),
//! `host` ([`TestHost`] and its cleanup), `stack` ([`StackFixture`]),
//! `command` (running the binary), `http` (loopback HTTP, traffic, polling),
//! `git` (a git daemon, signing keys), `ports` (ports claimed across
//! the test processes), `fleet` (the fleet's hosts),
//! `api_server` (loopback forge endpoints) and `systemd`.

pub mod api_server;
mod command;
mod fixtures;
pub mod fleet;
mod git;
pub mod github;
mod host;
mod http;
mod ports;
mod stack;
pub mod systemd;

pub use command::*;
pub use fixtures::*;
pub use git::*;
pub use host::*;
pub use http::*;
pub use ports::*;
pub use stack::*;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const STACKPIN: &str = env!("CARGO_BIN_EXE_stackpin");

/// How long [`TestCommand::run`] waits before it kills the command and fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
