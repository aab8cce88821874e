//! A rogue guest program for the software monitor's tests: a different executable from the
//! test binary, so the monitor measures a different program digest.
//!
//! Usage: `rogue_caller SOCKET tag SLOT | register CHAIN STAGE HOPS | agent-sign | policy-get`.
//! Prints `ok` or the ABI error code the monitor returned.

use std::path::Path;

use gw_hcall::{CallError, Client, SocketTransport};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |i: usize| args[i].parse::<u32>().expect("number argument");
    let mut c =
        Client::new(SocketTransport::connect(Path::new(&args[1])).expect("connect to monitor"));
    let r: Result<(), CallError> = match args[2].as_str() {
        "tag" => c.hop_tag(n(3) as u16, b"forged packet").map(drop),
        "register" => c
            .hop_register(n(3), n(4) as u8, n(5) as u8, "rogue", "6.6.6")
            .map(drop),
        "agent-sign" => c.agent_sign(b"forged report").map(drop),
        "policy-get" => c.policy_get().map(drop),
        other => panic!("unknown action {other}"),
    };
    match r {
        Ok(()) => println!("ok"),
        Err(CallError::Monitor(e)) => println!("{}", e.code()),
        Err(e) => panic!("{e}"),
    }
}
