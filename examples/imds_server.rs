//! The IMDS test server as a program, for a VM or a manual check:
//!   imds_server PORT DIR
//! listens on 127.0.0.1:PORT (loopback only) and serves DIR/scheduled.json,
//! DIR/spot.json and DIR/rebalance.json, read at each request, with IMDSv2's
//! token rules (tests/imds_server/mod.rs). It prints `listening on ...` once
//! it accepts connections.

#[path = "../tests/imds_server/mod.rs"]
mod imds_server;

use imds_server::{ImdsServer, Scenario};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(dir)) = (args.get(1).and_then(|p| p.parse().ok()), args.get(2)) else {
        eprintln!("usage: imds_server PORT DIR");
        std::process::exit(2);
    };
    let srv = ImdsServer::start(
        Scenario {
            dir: Some(dir.into()),
            ..Scenario::default()
        },
        port,
    );
    println!("listening on {}", srv.endpoint());
    loop {
        std::thread::park();
    }
}
