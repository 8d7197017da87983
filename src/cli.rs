//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::provision::{self, Outcome};
use crate::commands::{check, erase, escrow, recover, status};
use crate::config::{Config, Overrides, DEFAULT_CONFIG_PATH};
use crate::decision::plan::{kept_message, Plan};
use crate::error::{Error, Result};
use crate::host::probe::Blkid;
use crate::host::Host;
use crate::keys::key;
use crate::node::events;
use crate::node::guard;
use crate::volume::luks;

#[derive(Debug, Parser)]
#[command(
    name = "ephemera",
    version,
    about = "Encrypts a cloud instance's ephemeral NVMe disks: RAID0, LUKS2 with a forgotten key, ext4, mounted"
)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// NVMe model to match (overrides disks.model).
    #[arg(long, global = true)]
    pub model: Option<String>,
    /// Mount point (overrides mount.path).
    #[arg(long, global = true, value_name = "PATH")]
    pub mount: Option<PathBuf>,
    /// RSA public key file, PEM, to escrow the volume key to (overrides
    /// escrow.public_key).
    #[arg(long, global = true, value_name = "FILE")]
    pub escrow_key: Option<PathBuf>,
    /// Log debug detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make, open and mount the encrypted volume; mount it again if it is open
    /// but not mounted; keep a readable volume of an earlier boot (exit 5).
    Provision {
        /// Overwrite disks that hold foreign signatures.
        #[arg(long)]
        force: bool,
    },
    /// Show what provision would do, touching nothing: it refuses what
    /// provision refuses before its first write, with provision's exit code.
    Plan {
        /// Print the plan as JSON (docs/CONTRACT.md); a refusal too, with its
        /// reason and exit code.
        #[arg(long)]
        json: bool,
        /// Plan as `provision --force` would (overwrite foreign signatures).
        #[arg(long)]
        force: bool,
    },
    /// Check the config and what it names (keys, clevis, the cipher in the
    /// kernel's lists, the hook) without looking at any disk: for an image
    /// build. Exit 0, or 2 with the line provision would give.
    Check,
    /// Show the volume.
    Status {
        /// Print it as JSON (docs/CONTRACT.md).
        #[arg(long)]
        json: bool,
    },
    /// Reopen a volume from its escrow envelope after the key was lost, mount
    /// it at mount.path and, on the node, start ephemera.service again.
    Recover {
        /// The envelope; by default this node's envelope for the volume on the disks.
        #[arg(long, value_name = "FILE")]
        escrow: Option<PathBuf>,
        /// An escrow private key (PEM); once per key when the envelope needs
        /// several (escrow.threshold). Never put it in the config.
        #[arg(long, value_name = "FILE", required = true)]
        private_key: Vec<PathBuf>,
    },
    /// Ask the TPM and tang servers again for the key of a volume kept at
    /// boot ([unlock]); on the node, start ephemera.service again, which
    /// unlocks and mounts it, arms the guard and starts what requires it.
    Unlock,
    /// Erase a volume of an earlier boot on purpose; on the node, ephemera.service
    /// then makes a new one (elsewhere, the next provision does).
    Discard {
        /// The LUKS UUID of the volume to erase, as `ephemera status` shows it.
        #[arg(long, value_name = "UUID")]
        luks_uuid: String,
    },
    /// Unmount, close, erase the LUKS header (crypto-shred) and stop the
    /// array; erase ephemera's headers of earlier boots. Refused, naming
    /// what it would erase, without --yes or --luks-uuid.
    Teardown {
        /// Erase everything it finds: the open volume and every earlier
        /// boot's header.
        #[arg(long, conflicts_with = "luks_uuid")]
        yes: bool,
        /// Erase only this volume (open, or an earlier boot's header), as
        /// `ephemera status` shows its LUKS UUID.
        #[arg(long, value_name = "UUID")]
        luks_uuid: Option<String>,
    },
    /// Pending maintenance events and interruptions, from IMDS (needs no root).
    Events {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        /// Poll forever: warn once per new event, write the metrics, run the
        /// hook (ephemera-events.service).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        #[command(flatten)]
        ignored: NoOverrides,
    },
    /// Unmount every bind of the volume, newest first, wherever it is
    /// (ephemera.service's ExecStop, after the runtimes ordered after it
    /// have stopped). Reads no config.
    Unbind {
        #[command(flatten)]
        ignored: NoConfig,
    },
    /// Read the escrow envelope store ([escrow.store]) with your own
    /// credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, AWS_REGION): for ops, on a machine of their own.
    Escrow {
        #[command(subcommand)]
        action: EscrowAction,
        /// The store's endpoint (overrides escrow.store.url).
        #[arg(long, global = true, value_name = "URL")]
        url: Option<String>,
        /// Overrides escrow.store.bucket.
        #[arg(long, global = true)]
        bucket: Option<String>,
        /// Overrides escrow.store.prefix.
        #[arg(long, global = true)]
        prefix: Option<String>,
        /// The signing region (overrides escrow.store.region, AWS_REGION).
        #[arg(long, global = true)]
        region: Option<String>,
        /// PEM CAs to trust instead of the built-in roots (overrides escrow.store.ca_file).
        #[arg(long, global = true, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// Accept a plain http:// url: requests and credentials in clear
        /// (escrow.store.insecure_http).
        #[arg(long, global = true)]
        insecure_http: bool,
        #[command(flatten)]
        ignored: NoOverrides,
    },
    /// The reboot guard (run by ephemera-guard.service). Reads no config, so
    /// that its break-glass works whatever the config file holds.
    Guard {
        #[command(subcommand)]
        action: GuardAction,
        #[command(flatten)]
        ignored: NoConfig,
    },
}

/// The global options about the config, taken here and hidden from the
/// help of a command that reads no config (clap gives a global option to a
/// subcommand only when the subcommand has none of that name). Accepted, so
/// that scripts that pass them to every command keep working; unused.
#[derive(Debug, Args)]
pub struct NoConfig {
    #[arg(long, hide = true, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: NoOverrides,
}

/// As `NoConfig`, for the commands that read the config but not the disks'
/// model, the mount point or the escrow key.
#[derive(Debug, Args)]
pub struct NoOverrides {
    #[arg(long, hide = true, global = true)]
    model: Option<String>,
    #[arg(long, hide = true, global = true)]
    mount: Option<PathBuf>,
    #[arg(long, hide = true, global = true)]
    escrow_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EscrowAction {
    /// The envelopes in the store: instance id, LUKS UUID, when, size.
    List {
        /// Only this instance's.
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One envelope, as the node wrote it, for `ephemera recover --escrow`.
    Get {
        /// The instance id the envelope was stored under (`escrow list`).
        #[arg(long, value_name = "ID")]
        instance: String,
        /// The volume's LUKS UUID (`escrow list`).
        #[arg(long, value_name = "UUID")]
        luks_uuid: String,
        /// Write it to this new file (never overwritten) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GuardAction {
    /// Break glass: stop the guard so that reboot and shutdown work normally.
    Release,
    /// Refuse reboot and sleep targets while the volume is mounted (ExecStartPre).
    On,
    /// Wait while the volume is mounted (the guard unit's main process).
    Hold,
    /// Remove the refusals (ExecStopPost).
    Off,
}

fn load_config(cli: &Cli) -> Result<Config> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut cfg = Config::load(&path, explicit)?;
    cfg.apply(&Overrides {
        model: cli.model.clone(),
        mount: cli.mount.clone(),
        escrow_key: cli.escrow_key.clone(),
    });
    cfg.validate()?;
    Ok(cfg)
}

/// `plan --json`'s body when it refuses: the action `refuse`, beside the
/// plan's own actions, with what `ephemera` exits with.
#[derive(serde::Serialize)]
struct Refusal {
    action: &'static str,
    exit_code: u8,
    reason: String,
}

/// Prints the plan (or, with `--json`, the refusal), then exits as
/// provision would before its first write: 5 for a volume it would keep.
fn plan_out(r: Result<Plan>, as_json: bool) -> Result<()> {
    match (r, as_json) {
        (Err(e), true) => {
            let body = Refusal {
                action: "refuse",
                exit_code: e.exit_code(),
                reason: e.to_string(),
            };
            println!("{}", json(&body)?);
            Err(e)
        }
        (Err(e), false) => Err(e),
        (Ok(p), _) => {
            if as_json {
                println!("{}", json(&p)?);
            } else {
                print!("{}", p.describe());
            }
            match p {
                Plan::Keep {
                    volumes,
                    incomplete,
                } => Err(Error::Kept(kept_message(&volumes, &incomplete))),
                _ => Ok(()),
            }
        }
    }
}

/// After `recover`, `unlock` or `discard`: on the node, the unit they
/// started again ran provision, which wrote the record or removed it;
/// elsewhere the kept volume was dealt with here.
fn forget_kept_off_node(host: &Host) {
    if !crate::commands::on_node(host) {
        forget_kept(host);
    }
}

/// The kept volume was dealt with (or there was none): the record goes.
fn forget_kept(host: &Host) {
    if let Err(e) = crate::node::kept::clear(host) {
        tracing::warn!("{e}; the metrics may still say kept");
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Failed(format!("encoding JSON: {e}")))
}

pub fn run(cli: Cli) -> Result<()> {
    let host = Host::default();
    luks::forward_logs();
    if let Some(done) = run_before_config(&host, &cli) {
        return done;
    }
    // `status` reports what it can with a broken config, saying so.
    let cfg = match (&cli.command, load_config(&cli)) {
        (Command::Status { .. }, Err(e)) => {
            tracing::warn!("{e}; reporting with the default settings");
            Config::default()
        }
        (_, c) => c?,
    };
    match cli.command {
        Command::Provision { force } => provision_command(&host, &cfg, force)?,
        Command::Plan { .. } => unreachable!("handled above"),
        Command::Check => {
            for line in check::check(&host, &cfg)? {
                println!("{line}");
            }
            println!(
                "config {}: good",
                cli.config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(DEFAULT_CONFIG_PATH))
                    .display()
            );
        }
        Command::Status { json: as_json } => status_command(&host, &cfg, as_json)?,
        Command::Recover {
            escrow,
            private_key,
        } => {
            key::harden_process()?;
            recover::recover(&host, &cfg, &Blkid, escrow.as_deref(), &private_key)?;
            forget_kept_off_node(&host);
        }
        Command::Unlock => {
            key::harden_process()?;
            provision::unlock(&host, &cfg, &Blkid)?;
            forget_kept_off_node(&host);
        }
        Command::Discard { luks_uuid } => {
            erase::discard(&host, &cfg, &Blkid, &luks_uuid)?;
            forget_kept_off_node(&host);
        }
        Command::Escrow {
            action,
            url,
            bucket,
            prefix,
            region,
            ca_file,
            insecure_http,
            ..
        } => {
            let w = escrow::Where {
                url,
                bucket,
                prefix,
                region,
                ca_file,
                insecure_http,
            };
            escrow_command(&cfg, &w, action)?
        }
        Command::Guard { .. } => unreachable!("handled above"),
        Command::Events {
            json: as_json,
            watch,
            ..
        } => events::command(&cfg, &host, as_json, watch)?,
        Command::Unbind { .. } => unreachable!("handled above"),
        Command::Teardown { yes, luks_uuid } => {
            let confirm = match (yes, luks_uuid) {
                (true, _) => erase::Confirm::Yes,
                (false, Some(u)) => erase::Confirm::LuksUuid(u),
                (false, None) => erase::Confirm::Nothing,
            };
            let t = erase::teardown(&host, &cfg, &Blkid, &confirm)?;
            for line in &t.done {
                tracing::info!("{line}");
            }
            // The record of a kept volume goes with the last one: teardown
            // --luks-uuid of one of several leaves the others kept.
            if t.still_kept.is_empty() {
                forget_kept(&host);
            } else {
                tracing::info!("still kept for ops: LUKS UUID {}", t.still_kept.join(", "));
            }
        }
    }
    Ok(())
}

/// The commands that must work whatever the config file holds, or that
/// report its errors their own way; `None` for the others.
fn run_before_config(host: &Host, cli: &Cli) -> Option<Result<()>> {
    match &cli.command {
        // The guard needs no config: its break-glass must work whatever the
        // config file holds, and so must its ExecStopPost.
        Command::Guard { action, .. } => Some(match action {
            GuardAction::Release => guard::release(host),
            GuardAction::On => guard::on(host),
            GuardAction::Hold => guard::hold(host),
            GuardAction::Off => guard::off(host),
        }),
        // Nor does unbind, ephemera.service's ExecStop: a config broken
        // since boot must not keep the binds up at shutdown.
        Command::Unbind { .. } => Some(crate::volume::bind::unbind_volume(host).map(|done| {
            for t in done {
                tracing::info!("unmounted the bind {}", t.display());
            }
        })),
        // `plan --json` prints JSON whatever happens, the config's errors too.
        Command::Plan { json, force } => {
            let r =
                load_config(cli).and_then(|cfg| provision::plan_only(host, &cfg, &Blkid, *force));
            Some(plan_out(r, *json))
        }
        _ => None,
    }
}

/// `provision`: the record of a kept volume, for the watcher's metrics,
/// which cannot look at the disks, is written on exit 5 and gone otherwise.
fn provision_command(host: &Host, cfg: &Config, force: bool) -> Result<()> {
    key::harden_process()?;
    match provision::provision(host, cfg, &Blkid, force) {
        Err(e @ Error::Kept(_)) => {
            if let Err(w) = crate::node::kept::mark(host, &e.to_string()) {
                tracing::warn!("{w}; the metrics will say absent, not kept");
            }
            Err(e)
        }
        Err(e) => Err(e),
        Ok(
            Outcome::Created { .. }
            | Outcome::Remounted
            | Outcome::Unlocked
            | Outcome::AlreadyProvisioned
            | Outcome::NothingToDo,
        ) => {
            forget_kept(host);
            Ok(())
        }
    }
}

/// `status`, with the node's pending events.
fn status_command(host: &Host, cfg: &Config, as_json: bool) -> Result<()> {
    let mut s = status::status(host, cfg, &Blkid)?;
    s.events = events::for_node(host, cfg).0;
    if as_json {
        println!("{}", json(&s)?);
        return Ok(());
    }
    print!("{}", s.describe());
    if !s.events.is_empty() {
        for line in events::describe(&s.events).lines() {
            println!("event: {line}");
        }
    }
    Ok(())
}

/// `escrow list|get`: ops reading the envelope store.
fn escrow_command(cfg: &Config, w: &escrow::Where, action: EscrowAction) -> Result<()> {
    match action {
        EscrowAction::List {
            instance,
            json: as_json,
        } => {
            let entries = escrow::list(cfg, w, instance.as_deref())?;
            if as_json {
                println!("{}", json(&entries)?);
            } else {
                print!("{}", escrow::describe(&entries));
            }
            Ok(())
        }
        EscrowAction::Get {
            instance,
            luks_uuid,
            output,
        } => escrow::get(cfg, w, &instance, &luks_uuid, output.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option a person can see has a line of help, and the commands
    /// that read no config show none of the config's options.
    #[test]
    fn help_is_complete_and_shows_only_what_a_command_reads() {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            let mut cmd = cmd.clone();
            cmd.build();
            for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && !["help", "version"].contains(&id) {
                    out.push(format!("{path}: --{id} has no help"));
                }
                let reads_no_config = path.contains(" guard") || path.ends_with(" unbind");
                if reads_no_config && ["config", "model", "mount", "escrow_key"].contains(&id) {
                    out.push(format!("{path}: shows --{id}, but reads no config"));
                }
                let no_disks = path.contains(" events") || path.contains(" escrow");
                if no_disks && ["model", "mount", "escrow_key"].contains(&id) {
                    out.push(format!("{path}: shows --{id}, which it does not use"));
                }
            }
            for sc in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sc, &format!("{path} {}", sc.get_name()), out);
            }
        }
        let mut problems = Vec::new();
        walk(&Cli::command(), "ephemera", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        // Still accepted where they were, for the scripts that pass them.
        for args in [
            &["ephemera", "--config", "/c.toml", "guard", "release"][..],
            &["ephemera", "guard", "release", "--config", "/c.toml"],
            &["ephemera", "unbind", "--config", "/c.toml"],
            &["ephemera", "events", "--json", "--config", "/c.toml"],
            &["ephemera", "status", "--config", "/c.toml", "--model", "M"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        // The config path given to `events` still reaches the config.
        let cli = Cli::try_parse_from(["ephemera", "events", "--config", "/c.toml"]).unwrap();
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("/c.toml")));
    }

    /// A systemd time span as the units here write it: `90min`, `600s`, `2h`.
    fn span_secs(v: &str) -> u64 {
        let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("{v:?}"));
        n * match &v[digits.len()..] {
            "" | "s" | "sec" => 1,
            "min" | "m" => 60,
            "h" => 3600,
            other => panic!("unit {other:?} in {v:?}"),
        }
    }

    /// No configuration lets systemd kill a run that ephemera would end
    /// itself: the shipped unit's TimeoutStartSec outlasts the lock's wait, the
    /// NVMe wait, the largest unlock.wait_secs and the largest store upload
    /// this config accepts, plus the 10 minutes that were the bound for the
    /// work alone (a hung device).
    #[test]
    fn the_unit_outlasts_every_wait() {
        let unit = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dist/systemd/ephemera.service"
        ))
        .unwrap();
        let timeout: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.strip_prefix("TimeoutStartSec="))
            .collect();
        let [timeout] = timeout[..] else {
            panic!("one TimeoutStartSec= in the unit: {timeout:?}")
        };
        let work = 600;
        let waits = crate::host::lock::LOCK_WAIT.as_secs()
            + crate::commands::provision::NVME_WAIT.as_secs()
            + crate::config::unlock::MAX_WAIT_SECS
            + crate::config::store::MAX_TIMEOUT_SECS;
        assert!(
            span_secs(timeout) >= waits + work,
            "TimeoutStartSec={timeout} is under the waits ({waits} s) and the work ({work} s)"
        );
        // The limits are the ones validation applies.
        let parse = |t: &str| {
            let c = Config::parse(t, std::path::Path::new("t.toml"))?;
            c.validate().map(|()| c)
        };
        let usage_msg = |t: &str| parse(t).unwrap_err().to_string();
        let over = |t: &str| usage_msg(&format!("[unlock]\ntpm2 = true\n{t}"));
        assert!(over(&format!(
            "wait_secs = {}\n",
            crate::config::unlock::MAX_WAIT_SECS + 1
        ))
        .contains("unlock.wait_secs"));
        parse(&format!(
            "[unlock]\ntpm2 = true\nwait_secs = {}\n",
            crate::config::unlock::MAX_WAIT_SECS
        ))
        .unwrap();
        let store = |t: u64| {
            format!("[escrow]\npublic_key = \"/k.pem\"\n[escrow.store]\nurl = \"https://s3.example\"\nbucket = \"fleet\"\ntimeout_secs = {t}\n")
        };
        assert!(
            usage_msg(&store(crate::config::store::MAX_TIMEOUT_SECS + 1))
                .contains("escrow.store.timeout_secs")
        );
        parse(&store(crate::config::store::MAX_TIMEOUT_SECS)).unwrap();
        assert_eq!(span_secs("90min"), 5400);
    }
}
