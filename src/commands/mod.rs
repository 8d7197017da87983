//! One module per subcommand group; each reads the system through a `Host`
//! root, decides with `plan` where there is a decision, and acts through the
//! layers below (`md`, `luks`, `mount`, `escrow`, `guard`).

pub mod check;
pub mod erase;
pub mod escrow;
pub mod provision;
pub mod recover;
pub mod status;

use crate::error::Result;
use crate::host::cmd;
use crate::host::Host;

const UNIT: &str = "ephemera.service";

/// systemd runs here and ephemera.service is installed.
pub fn on_node(host: &Host) -> bool {
    crate::node::guard::systemd_runs(host)
        && cmd::run(
            "looking for ephemera.service",
            "systemctl",
            &["cat", "--quiet", UNIT],
        )
        .is_ok()
}

/// Starts ephemera.service again (after `recover` its provision finds the
/// volume mounted; after `discard` it makes a new one; the guard comes with
/// it), then the services that require it and did not start because it had
/// failed, as they would have at boot.
pub fn start_unit_and_dependents() -> Result<()> {
    let _ = cmd::run(
        "resetting ephemera.service",
        "systemctl",
        &["reset-failed", UNIT],
    );
    cmd::run(&format!("starting {UNIT}"), "systemctl", &["start", UNIT])?;
    tracing::info!("{UNIT} is active again; the reboot guard starts with it");
    let dependents = cmd::run(
        "listing the units that require ephemera.service",
        "systemctl",
        &["show", "-P", "RequiredBy", UNIT],
    )?;
    let mut start = Vec::new();
    for unit in dependents.split_whitespace() {
        let state = cmd::run(
            &format!("asking the state of {unit}"),
            "systemctl",
            &["show", "-P", "ActiveState", unit],
        )?;
        if state.trim() != "active" && state.trim() != "activating" {
            start.push(unit.to_string());
        }
    }
    if !start.is_empty() {
        let mut args = vec!["start".to_string(), "--no-block".into()];
        args.extend(start.iter().cloned());
        cmd::run(
            "starting the units that require ephemera.service",
            "systemctl",
            &args,
        )?;
        tracing::info!("started {}", start.join(", "));
    }
    Ok(())
}
