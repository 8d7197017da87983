//! The node_exporter textfile: the pending events and the volume's health
//! as Prometheus metrics. Rendering is pure; the watcher writes it.

use super::Event;
use crate::host::safe_fs;

/// Escapes a Prometheus label value.
pub(super) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the metrics file says, besides the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The last poll read every document.
    pub imds_up: bool,
    /// Seconds since the epoch of the last poll that read every document.
    pub last_success: Option<i64>,
    /// ephemera's volume as the kernel shows it (`VOLUME_STATES`).
    pub volume_state: &'static str,
    /// The reboot guard is on with all its refusals in place.
    pub guard_armed: bool,
    /// With `[unlock]` and a mounted volume: whether it is bound to its
    /// pins (its unlock file is there), so that a reboot keeps it. `None`
    /// without `[unlock]` or without a mounted volume.
    pub unlock_bound: Option<bool>,
}

/// The volume's states the watcher reports. It reads no disk (its sandbox
/// has no devices): `kept` is provision's record (`node::kept`) of a
/// volume of an earlier boot it kept this boot, exit 5, for ops.
pub const VOLUME_STATES: [&str; 4] = ["provisioned", "unmounted", "kept", "absent"];

/// `provisioned` (open and mounted), `unmounted` (open, not mounted),
/// `kept` (nothing open; this boot's provision kept an earlier boot's
/// volume) or `absent` (nothing open).
pub fn volume_state(
    host: &crate::host::Host,
    inv: &crate::host::discover::Inventory,
) -> &'static str {
    match &inv.dm {
        Some(d) if d.mount().is_some() => "provisioned",
        Some(_) => "unmounted",
        None if crate::node::kept::is_marked(host) => "kept",
        None => "absent",
    }
}

/// With `[unlock]` and a volume mounted: whether it is bound to its pins,
/// that is its unlock file is beside the envelopes (a binding that failed
/// at provision leaves none). `None` otherwise: no question to ask.
pub fn unlock_bound(
    host: &crate::host::Host,
    inv: &crate::host::discover::Inventory,
    cfg: &crate::config::Config,
) -> Option<bool> {
    if !cfg.unlock.enabled() {
        return None;
    }
    let dm = inv.dm.as_ref().filter(|d| d.mount().is_some())?;
    let file = crate::keys::unlock::path_for(&cfg.escrow.path, &dm.luks_uuid());
    Some(host.abs(&file).is_file())
}

/// The textfile-collector text (README, "Metrics").
pub fn render_metrics(events: &[Event], h: &Health) -> String {
    let mut s = String::new();
    s += "# HELP ephemera_event_not_before_seconds A pending event for this instance; the value is its not-before time.\n";
    s += "# TYPE ephemera_event_not_before_seconds gauge\n";
    for e in events {
        s += &format!(
            "ephemera_event_not_before_seconds{{code=\"{}\",source=\"{}\",id=\"{}\",data_loss=\"{}\"}} {}\n",
            label(&e.code),
            e.source.name(),
            label(e.id.as_deref().unwrap_or("")),
            e.data_loss,
            e.not_before_unix
        );
    }
    s += "# HELP ephemera_events_pending Pending events, by whether they lose the volume's data.\n";
    s += "# TYPE ephemera_events_pending gauge\n";
    for loss in [true, false] {
        let n = events.iter().filter(|e| e.data_loss == loss).count();
        s += &format!("ephemera_events_pending{{data_loss=\"{loss}\"}} {n}\n");
    }
    s += "# HELP ephemera_volume_state The encrypted volume's state: 1 for the state it is in.\n";
    s += "# TYPE ephemera_volume_state gauge\n";
    for state in VOLUME_STATES {
        s += &format!(
            "ephemera_volume_state{{state=\"{state}\"}} {}\n",
            u8::from(state == h.volume_state)
        );
    }
    s += "# HELP ephemera_guard_armed 1 while the reboot guard is on with all its refusals in place.\n";
    s += "# TYPE ephemera_guard_armed gauge\n";
    s += &format!("ephemera_guard_armed {}\n", u8::from(h.guard_armed));
    if let Some(bound) = h.unlock_bound {
        s += "# HELP ephemera_unlock_bound 1 when the mounted volume is bound to its [unlock] pins, so that a reboot keeps it; 0 when it is not (a binding that failed at provision).\n";
        s += "# TYPE ephemera_unlock_bound gauge\n";
        s += &format!("ephemera_unlock_bound {}\n", u8::from(bound));
    }
    s += "# HELP ephemera_imds_up 1 when the last poll read every IMDS document.\n";
    s += "# TYPE ephemera_imds_up gauge\n";
    s += &format!("ephemera_imds_up {}\n", u8::from(h.imds_up));
    s += "# HELP ephemera_imds_last_success_timestamp_seconds When a poll last read every IMDS document (0: never).\n";
    s += "# TYPE ephemera_imds_last_success_timestamp_seconds gauge\n";
    s += &format!(
        "ephemera_imds_last_success_timestamp_seconds {}\n",
        h.last_success.unwrap_or(0)
    );
    s
}

/// How the metrics are written (`safe_fs`): mode 0644, no fsync (they are
/// rewritten every poll; an fsync every 10 s would be a disk write every
/// 10 s for nothing), into a directory that must exist, whoever owns the
/// ones above it. Debian's prometheus-node-exporter gives /var/lib/prometheus
/// to the `prometheus` account (its postinst), so a refusal of non-root
/// owners would refuse the default layout. It is not needed: no link on the
/// way is followed and the file is made new (`O_EXCL`, random name) then
/// renamed, so that account can at most make the watcher write its metrics,
/// public anyway, as a new root-owned 0644 file in a directory of its
/// choosing; never into a file that exists (security review, issue 17).
pub const METRICS: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Anyone,
    mode: 0o644,
    durable: false,
    dir_mode: None,
};
