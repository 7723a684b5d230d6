//! Ports for servers that another process starts later (a test app in a
//! container, `git-daemon`). Binding `127.0.0.1:0` and letting go of the
//! port is a race: the kernel hands the same number to any process's next
//! outgoing connection (a pull, a probe) or to another test's `:0`, and the
//! app that binds it later exits with "address in use". So these come from
//! below the kernel's ephemeral range, which it never hands out by itself,
//! and each is claimed across the concurrent test processes by a lock on
//! a file named after it, held while the claim lives.

use super::*;
use std::fs::{File, OpenOptions};

/// A port no other test holds, free on its address when claimed.
pub struct PortClaim {
    pub port: u16,
    _lock: File,
}

/// The first port above the range the claims come from: the kernel's
/// ephemeral range starts there (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Claims a port free on `addr` (an address of this machine).
pub fn claim_port(addr: &str) -> PortClaim {
    const LOW: u16 = 12000;
    let high = ephemeral_start().max(LOW + 1000);
    let dir = std::env::temp_dir().join("stackpin-test-ports");
    std::fs::create_dir_all(&dir).expect("failed to create the port claims' dir");
    let span = u64::from(high - LOW);
    // Start where another process is unlikely to: fewer locks tried.
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9);
    for i in 0..span {
        let port = LOW + ((start + i) % span) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .expect("failed to open a port claim's lock file");
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind((addr, port)).is_ok() {
            return PortClaim { port, _lock: lock };
        }
    }
    panic!("no port in {LOW}..{high} is free on {addr} and unclaimed");
}
