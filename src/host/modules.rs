//! Loads the kernel modules ephemera needs when they are not there yet.

use crate::error::Result;
use crate::host::cmd;
use crate::host::Host;

/// A module is present when `/sys/module/NAME` exists (loaded, or built in
/// with parameters; `modprobe` is a no-op for built-ins anyway).
pub fn ensure(host: &Host, names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !host.path("sys/module").join(n).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["-a"];
    args.extend(&missing);
    cmd::run(
        &format!("loading kernel modules {}", missing.join(" ")),
        "modprobe",
        &args,
    )?;
    tracing::info!(modules = %missing.join(" "), "loaded kernel modules");
    Ok(())
}
