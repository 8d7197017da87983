//! The watcher: polls IMDS every interval, warns once per new event,
//! rewrites the metrics, runs the hook, and remembers what it has seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::metrics::{render_metrics, volume_state, Health, METRICS};
use super::{poll, sort, Event, Hook, Poll, Source};
use crate::error::Error;
use crate::host::safe_fs;
use crate::host::Host;
use crate::node::imds::Imds;

/// At most this many keys are kept (the oldest go first).
pub(super) const SEEN_MAX: usize = 4096;
/// At most this many new events are acted on (warned about, hooked) per
/// poll; more wait for the next poll. A bound on hook runs, whatever IMDS says.
pub const NEW_PER_POLL: usize = 16;

/// How the seen file is written: it decides whether a hook runs again, so
/// only below directories root alone can change (the default, /run/ephemera,
/// is made 0755 when missing), fsync'ed, mode 0600.
pub const SEEN: safe_fs::How = safe_fs::How {
    owners: safe_fs::Owners::Root,
    mode: 0o600,
    durable: true,
    dir_mode: Some(0o755),
};

/// The keys of the events already acted on, with when (seconds since the
/// epoch), persisted in `events.seen_file`. Its default is under /run: a
/// restart of the watcher does not act twice, a reboot (which ends this
/// volume anyway, so the next one is a new replica) starts afresh, and
/// nothing of it is baked into an image.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Seen(pub(super) BTreeMap<String, i64>);

impl Seen {
    fn load(path: &Path) -> Seen {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: unreadable ({e}); starting with no events seen",
                    path.display()
                );
                Seen::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::default(),
            Err(e) => {
                tracing::warn!("{}: {e}; starting with no events seen", path.display());
                Seen::default()
            }
        }
    }

    pub(super) fn insert(&mut self, key: String, now: i64) {
        self.0.insert(key, now);
        while self.0.len() > SEEN_MAX {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(k, t)| (**t, (*k).clone()))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.0.remove(&k),
                None => break,
            };
        }
    }
}

/// What one watcher tick did, for the tests and the benchmark.
#[derive(Debug, Default)]
pub struct Tick {
    pub new_events: Vec<Event>,
    pub hook_failures: usize,
    /// `[escrow.store]`: envelopes still not in the store after this tick
    /// (`None`: no retry was due, or no store).
    pub escrow_pending: Option<usize>,
}

/// The retry of envelope uploads that failed at provision (`[escrow.store]`),
/// in a thread of its own: each pending envelope's upload is bounded by
/// `escrow.store.timeout_secs`, and envelopes pile up (one a boot while the
/// store is unreachable), so the event polls never wait on the store. The
/// thread sends each round's result; the watcher's tick reads what arrived.
struct EscrowRetry {
    results: mpsc::Receiver<(Vec<String>, usize)>,
    every: Duration,
    /// The errors last logged, so that the same failure is logged once
    /// when it begins, not at every retry.
    logged: Vec<String>,
}

/// The watcher: `ephemera events --watch`, run by ephemera-events.service.
pub struct Watcher {
    imds: Imds,
    host: Host,
    textfile: Option<PathBuf>,
    hook: Option<Hook>,
    seen_path: PathBuf,
    seen: Seen,
    /// The last good events of each document.
    last: BTreeMap<Source, Vec<Event>>,
    last_success: Option<i64>,
    /// What was last logged about IMDS's health, so that a state is logged
    /// once when it begins, not at every poll.
    logged: Option<String>,
    /// What stops the metrics, as last logged.
    textfile_logged: Option<String>,
    escrow: Option<EscrowRetry>,
    /// The config, to judge each poll's reboots by the next boot's plan
    /// ([`super::reboot_keeps_data`]); without it, every reboot is a loss.
    config: Option<crate::config::Config>,
}

impl Watcher {
    pub fn new(
        imds: Imds,
        host: Host,
        textfile: Option<PathBuf>,
        hook: Option<Hook>,
        seen_path: PathBuf,
    ) -> Watcher {
        let seen = Seen::load(&seen_path);
        Watcher {
            imds,
            host,
            textfile,
            hook,
            seen_path,
            seen,
            last: BTreeMap::new(),
            last_success: None,
            logged: None,
            textfile_logged: None,
            escrow: None,
            config: None,
        }
    }

    /// Judges each poll's reboots with `cfg` as the next boot would: no
    /// loss only when it would unlock the mounted volume (`[unlock]`, its
    /// unlock file, every member here, mounted once).
    pub fn with_config(mut self, cfg: &crate::config::Config) -> Watcher {
        self.config = Some(cfg.clone());
        self
    }

    /// Also retries, every `every`, the escrow envelopes that the store
    /// (`cfg.escrow.store`) does not hold yet, until it does: in a thread
    /// started here, which tries at once, then `every` after each round
    /// ends. Each try is bounded by `escrow.store.timeout_secs` per
    /// envelope; an event poll never waits for it.
    pub fn with_escrow_store(mut self, cfg: crate::config::Config, every: Duration) -> Watcher {
        if cfg.escrow.store.is_none() {
            return self;
        }
        let (tx, results) = mpsc::channel();
        let host = self.host.clone();
        let spawned = std::thread::Builder::new()
            .name("escrow-retry".into())
            .spawn(move || loop {
                let round = crate::node::escrow_store::retry_pending(&host, &cfg);
                if tx.send(round).is_err() {
                    return; // the watcher is gone
                }
                // The retry period itself, not a wait for a condition.
                std::thread::sleep(every);
            });
        match spawned {
            Ok(_) => {
                self.escrow = Some(EscrowRetry {
                    results,
                    every,
                    logged: Vec::new(),
                })
            }
            Err(e) => tracing::error!(
                "cannot start the escrow store's retry ({e}): pending envelopes stay pending"
            ),
        }
        self
    }

    pub fn imds(&self) -> &Imds {
        &self.imds
    }

    /// One poll: log a change in IMDS's health, warn about and hook each
    /// new event, write the metrics.
    pub fn tick(&mut self) -> Tick {
        let p = poll(&mut self.imds);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.log_health(&p);
        if p.ok() {
            self.last_success = Some(now);
        }
        for s in &p.read {
            self.last.insert(
                *s,
                p.events
                    .iter()
                    .filter(|e| e.source == *s)
                    .cloned()
                    .collect(),
            );
        }
        let mut events: Vec<Event> = self.last.values().flatten().cloned().collect();
        sort(&mut events);
        // One read of the node's volume per poll, for the reboots' rule and
        // the metrics, and none when neither is wanted.
        let inv = (self.config.is_some() || self.textfile.is_some())
            .then(|| crate::host::discover::discover(&self.host));
        let mut unlock_bound = None;
        if let (Some(cfg), Some(inv)) = (&self.config, &inv) {
            super::with_unlock(&mut events, super::reboot_keeps_data(&self.host, inv, cfg));
            unlock_bound = super::metrics::unlock_bound(&self.host, inv, cfg);
        }
        let fresh: Vec<Event> = events
            .iter()
            .filter(|e| !self.seen.0.contains_key(&e.key()))
            .take(NEW_PER_POLL)
            .cloned()
            .collect();
        let mut tick = Tick::default();
        if !fresh.is_empty() {
            for e in &fresh {
                tracing::warn!("{}", e.warning());
                self.seen.insert(e.key(), now);
            }
            // Saved before the hook runs: a crash in the hook never runs it twice.
            self.save_seen();
            for e in &fresh {
                if let Some(h) = &self.hook {
                    if let Err(why) = h.run(e) {
                        tracing::error!("hook for event {}: {why}; not retried", e.key());
                        tick.hook_failures += 1;
                    }
                }
            }
        }
        self.write_metrics(&events, p.ok(), inv.as_ref(), unlock_bound);
        tick.new_events = fresh;
        tick.escrow_pending = self.retry_escrow();
        tick
    }

    /// What the retry's rounds that ended since the last tick found, never
    /// waiting for one: how many envelopes are still pending after the
    /// newest (`None` when no round ended).
    fn retry_escrow(&mut self) -> Option<usize> {
        let r = self.escrow.as_mut()?;
        let mut left = None;
        while let Ok((errors, pending)) = r.results.try_recv() {
            for e in errors.iter().filter(|e| !r.logged.contains(e)) {
                tracing::error!("{e}; retrying every {} s", r.every.as_secs());
            }
            r.logged = errors;
            left = Some(pending);
        }
        left
    }

    fn log_health(&mut self, p: &Poll) {
        let state = match (&p.unreachable, p.errors.is_empty()) {
            (Some(why), _) => format!("no instance metadata service ({why}): not on EC2, or IMDS is off; polling on quietly"),
            (None, false) => format!("IMDS: {}", p.errors.join("; ")),
            (None, true) => "IMDS answers".to_string(),
        };
        if self.logged.as_deref() == Some(state.as_str()) {
            return;
        }
        match (&p.unreachable, p.errors.is_empty()) {
            (Some(_), _) => tracing::info!("{state}"),
            (None, false) => tracing::warn!("{state}"),
            // The first good poll after a bad one; a good start is not news.
            (None, true) if self.logged.is_some() => tracing::info!("{state}"),
            (None, true) => {}
        }
        self.logged = Some(state);
    }

    fn save_seen(&self) {
        let text = serde_json::to_string(&self.seen).unwrap_or_default();
        if let Err(e) = safe_fs::write_file(&self.seen_path, text.as_bytes(), SEEN) {
            tracing::warn!("{e}; a restart of the watcher would act on these events again");
        }
    }

    /// Writes the metrics; what stops it is logged once, when it begins
    /// (a missing directory at info, anything else as a warning), not at
    /// every poll.
    fn write_metrics(
        &mut self,
        events: &[Event],
        imds_up: bool,
        inv: Option<&crate::host::discover::Inventory>,
        unlock_bound: Option<bool>,
    ) {
        let (Some(path), Some(inv)) = (&self.textfile, inv) else {
            return;
        };
        let health = Health {
            imds_up,
            last_success: self.last_success,
            volume_state: volume_state(&self.host, inv),
            guard_armed: crate::node::guard::armed(&self.host),
            unlock_bound,
        };
        let problem = match safe_fs::write_file(path, render_metrics(events, &health).as_bytes(), METRICS) {
            Ok(()) => None,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Some((
                false,
                format!(
                    "{} does not exist (is prometheus-node-exporter installed?); no metrics written until it does",
                    path.parent().unwrap_or(Path::new("/")).display()
                ),
            )),
            Err(e) => Some((true, format!("no metrics written: {e}"))),
        };
        if problem.as_ref().map(|p| &p.1) != self.textfile_logged.as_ref() {
            match &problem {
                Some((true, m)) => tracing::warn!("{m}"),
                Some((false, m)) => tracing::info!("{m}"),
                None => {}
            }
        }
        self.textfile_logged = problem.map(|p| p.1);
    }

    /// Polls every `interval`, forever (until systemd stops the service).
    pub fn run(&mut self, interval: Duration) -> ! {
        tracing::info!(
            endpoint = self.imds.endpoint(),
            interval_s = interval.as_secs(),
            textfile = %self.textfile.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            hook = %self.hook.as_ref().map(|h| h.program.display().to_string()).unwrap_or_else(|| "none".into()),
            "watching for maintenance events and interruptions"
        );
        loop {
            self.tick();
            // The poll period itself, not a wait for a condition.
            std::thread::sleep(interval);
        }
    }
}
