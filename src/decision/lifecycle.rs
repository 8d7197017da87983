//! The lifecycle table: for each state a node can be in when `provision`
//! runs, and each class of configuration, what `provision` does and what
//! happens to the data. It is the specification the decision is held to:
//! `tests/lifecycle.rs` builds a node for every state and every class
//! (escrow, unlock pins, `on_existing`, binds, filesystem), and checks that
//! [`super::plan::plan`] gives the row's action, that `status` says the same,
//! and that the events watcher's claim about a reboot agrees with the row of
//! the next boot. README's lifecycle table is [`markdown`], checked by the
//! same test, so the document cannot promise what the code does not do.
//!
//! A row applies to a class when its [`When`] does; the first row of a state
//! that applies is the one. A state with no row for a class fails the test.

use serde::Serialize;

use crate::config::{FsType, OnExisting};

use super::plan::{Over, Plan};

/// `[escrow]` as users write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Escrow {
    None,
    One,
    /// Three public keys, any two recover (Shamir).
    TwoOfThree,
}

/// `[unlock]` as users write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pins {
    None,
    Tpm2,
    Tang,
    Kms,
    /// `tpm2 = true` and a tang server, `threshold = 2`.
    Tpm2AndTang,
    /// `tpm2 = true` and a KMS key, `threshold = 2`.
    KmsAndTpm2,
}

/// One class of configuration: what decides the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Class {
    pub escrow: Escrow,
    pub pins: Pins,
    pub on_existing: OnExisting,
    /// Some `[[bind]]` entries.
    pub binds: bool,
    pub fs: FsType,
}

impl Class {
    /// Every class: 3 x 6 x 3 x 2 x 2.
    pub fn all() -> Vec<Class> {
        let mut v = Vec::new();
        for escrow in [Escrow::None, Escrow::One, Escrow::TwoOfThree] {
            for pins in [
                Pins::None,
                Pins::Tpm2,
                Pins::Tang,
                Pins::Kms,
                Pins::Tpm2AndTang,
                Pins::KmsAndTpm2,
            ] {
                for on_existing in [OnExisting::Keep, OnExisting::Reformat, OnExisting::Fail] {
                    for binds in [false, true] {
                        for fs in [FsType::Ext4, FsType::Xfs] {
                            v.push(Class {
                                escrow,
                                pins,
                                on_existing,
                                binds,
                                fs,
                            });
                        }
                    }
                }
            }
        }
        v
    }

    pub fn escrow(&self) -> bool {
        self.escrow != Escrow::None
    }

    pub fn unlock(&self) -> bool {
        self.pins != Pins::None
    }

    /// The node keeps a record of its volume (an envelope, an unlock file).
    pub fn record(&self) -> bool {
        self.escrow() || self.unlock()
    }
}

/// A step of a first `provision`, named as its failpoint: a power cut
/// right after it, then a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    AfterWipe,
    AfterMdBuild,
    AfterLuksFormat,
    AfterLuksOpen,
    /// The node's record written (envelope, unlock file), marked never
    /// mounted: `after-escrow-write`, or the binding without escrow.
    AfterRecord,
    AfterMkfs,
    /// Mounted, but the record not yet marked mounted.
    AfterMount,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::AfterWipe,
        Step::AfterMdBuild,
        Step::AfterLuksFormat,
        Step::AfterLuksOpen,
        Step::AfterRecord,
        Step::AfterMkfs,
        Step::AfterMount,
    ];
}

/// What the node is in when `provision` runs. Two disks, one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Blank disks, no record.
    FirstBoot,
    /// This boot's volume, mounted at `mount.path`.
    Rerun,
    /// This boot's volume, open, not mounted, with its file system.
    Unmounted,
    /// This boot's volume, mounted somewhere else.
    MountedElsewhere,
    /// This boot's run was killed after it opened the volume, before mkfs.
    OpenUnfinished,
    /// A reboot after a finished provision: every member here.
    Reboot,
    /// The same, and the pins do not give the key.
    RebootPinsDown,
    /// New blank disks (a stop and start); the old record stays.
    StopStart,
    /// A reboot with the first member, which holds the header, missing.
    HeaderDiskMissing,
    /// A reboot with the other member missing.
    OtherMemberMissing,
    /// A reboot, and a third disk holding someone else's file system.
    ForeignDiskAdded,
    /// `ephemera discard` erased the kept volume's header (every disk here).
    Discarded,
    /// `ephemera discard` of a kept volume whose header's disk was missing.
    DiscardedMissing,
    /// A power cut right after a step of the first provision, then a boot.
    PowerCut(Step),
}

impl State {
    pub fn all() -> Vec<State> {
        let mut v = vec![
            State::FirstBoot,
            State::Rerun,
            State::Unmounted,
            State::MountedElsewhere,
            State::OpenUnfinished,
            State::Reboot,
            State::RebootPinsDown,
            State::StopStart,
            State::HeaderDiskMissing,
            State::OtherMemberMissing,
            State::ForeignDiskAdded,
            State::Discarded,
            State::DiscardedMissing,
        ];
        v.extend(Step::ALL.map(State::PowerCut));
        v
    }
}

/// Why a new volume may go over ephemera's own (the plan's [`Over`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Replaces {
    Unfinished,
    NeverMounted,
    Unreadable,
    Reformat,
}

/// What `provision` does: the plan, in the table's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Makes a new volume, over nothing of ephemera's.
    New,
    /// Makes a new volume over ephemera's own, which goes for this reason.
    Replace(Replaces),
    /// Nothing: the volume is mounted where it should be.
    Nothing,
    /// Mounts the open volume again.
    Remount,
    /// Asks the pins for the key; opens and mounts the volume.
    Unlock,
    /// Leaves the volume as it is (exit 5).
    Keep,
    /// Refuses, writing nothing (exit 3).
    Refuse,
}

impl Action {
    /// As `status --json` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Action::New => "new",
            Action::Replace(Replaces::Unfinished) => "replace_unfinished",
            Action::Replace(Replaces::NeverMounted) => "replace_never_mounted",
            Action::Replace(Replaces::Unreadable) => "replace_unreadable",
            Action::Replace(Replaces::Reformat) => "replace_reformat",
            Action::Nothing => "nothing",
            Action::Remount => "remount",
            Action::Unlock => "unlock",
            Action::Keep => "keep",
            Action::Refuse => "refuse",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Action::New => "makes a new volume",
            Action::Replace(Replaces::Unfinished) => {
                "closes it, erases its header, makes a new volume"
            }
            Action::Replace(Replaces::NeverMounted) => {
                "erases it (never mounted: it holds no data), makes a new volume"
            }
            Action::Replace(Replaces::Unreadable) => {
                "erases it (no record opens it), makes a new volume"
            }
            Action::Replace(Replaces::Reformat) => {
                "erases it, warning that it could be read, makes a new volume"
            }
            Action::Nothing => "nothing",
            Action::Remount => "mounts it again, same key",
            Action::Unlock => "asks its pins for the key, then reassembles, opens and mounts it",
            Action::Keep => "keeps it: writes and mounts nothing",
            Action::Refuse => "refuses, writes nothing",
        }
    }
}

/// What happens to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Data {
    /// A new, empty volume.
    Empty,
    /// The same volume and data, mounted.
    Mounted,
    /// Untouched and readable later: the escrow private key (`recover`),
    /// or `ephemera unlock` once the pins answer.
    KeptForOps,
    /// Untouched; the node runs no volume until someone acts.
    Untouched,
    /// Gone: its key went with the kernel's memory.
    Lost,
    /// Erased, though this node could have read it (`"reformat"`).
    Erased,
    /// Erased on purpose by ops (`ephemera discard`).
    DiscardedByOps,
    /// None: it was never mounted, so it never held data.
    NoData,
}

impl Data {
    pub fn words(self) -> &'static str {
        match self {
            Data::Empty => "new, empty",
            Data::Mounted => "**kept, mounted**",
            Data::KeptForOps => "**kept for ops**: `recover`, or `unlock` once the pins answer",
            Data::Untouched => "untouched",
            Data::Lost => "lost (its key is gone)",
            Data::Erased => "erased, though readable",
            Data::DiscardedByOps => "discarded by ops",
            Data::NoData => "none: never mounted",
        }
    }
}

/// The classes a row applies to: each set field must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub record: Option<bool>,
    pub escrow: Option<bool>,
    pub unlock: Option<bool>,
    pub on_existing: Option<OnExisting>,
}

const ANY: When = When {
    record: None,
    escrow: None,
    unlock: None,
    on_existing: None,
};
const UNLOCK: When = When {
    unlock: Some(true),
    ..ANY
};
const RECORD: When = When {
    record: Some(true),
    ..ANY
};
const ESCROW: When = When {
    escrow: Some(true),
    ..ANY
};
const FAIL: When = When {
    on_existing: Some(OnExisting::Fail),
    ..ANY
};
const RECORD_FAIL: When = When {
    on_existing: Some(OnExisting::Fail),
    ..RECORD
};
const RECORD_KEEP: When = When {
    on_existing: Some(OnExisting::Keep),
    ..RECORD
};
const ESCROW_KEEP: When = When {
    on_existing: Some(OnExisting::Keep),
    ..ESCROW
};

impl When {
    pub fn applies(&self, c: &Class) -> bool {
        self.record.is_none_or(|r| r == c.record())
            && self.escrow.is_none_or(|e| e == c.escrow())
            && self.unlock.is_none_or(|u| u == c.unlock())
            && self.on_existing.is_none_or(|o| o == c.on_existing)
    }

    /// The condition in words, for the README: `first` for the first row
    /// of its states, where no condition reads "any", not "otherwise".
    pub fn words(&self, first: bool) -> String {
        let mut parts = Vec::new();
        match (self.record, self.escrow, self.unlock) {
            (_, _, Some(true)) => parts.push("`[unlock]`".to_string()),
            (Some(true), _, _) => parts.push("escrow or `[unlock]`".to_string()),
            (_, Some(true), _) => parts.push("escrow".to_string()),
            _ => {}
        }
        if let Some(o) = self.on_existing {
            parts.push(format!("`on_existing = \"{}\"`", o.name()));
        }
        if parts.is_empty() {
            if first { "any" } else { "otherwise" }.into()
        } else {
            parts.join(", ")
        }
    }
}

/// One row: the states it covers, for the classes it applies to.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The README's words for the states.
    pub label: &'static str,
    pub states: &'static [State],
    pub when: When,
    pub action: Action,
    /// `provision`'s exit code.
    pub exit: u8,
    pub data: Data,
    /// The real-kernel tests that show it (`tests/vm.rs`, `tests/faults.rs`,
    /// `tests/system.rs`), beside tests/lifecycle.rs, which checks the plan
    /// for every class.
    pub shown_by: &'static str,
}

use Action::{Keep, Nothing, Refuse, Remount, Replace, Unlock};
use Data::{DiscardedByOps, Empty, Erased, KeptForOps, Lost, Mounted, NoData, Untouched};
use Replaces::{NeverMounted, Reformat, Unfinished, Unreadable};
use State::*;
use Step::*;

const NEW: Action = Action::New;

const fn row(
    label: &'static str,
    states: &'static [State],
    when: When,
    action: Action,
    exit: u8,
    data: Data,
    shown_by: &'static str,
) -> Row {
    Row {
        label,
        states,
        when,
        action,
        exit,
        data,
        shown_by,
    }
}

const REBOOTS: &[State] = &[Reboot, RebootPinsDown];
const NEVER_MOUNTED: &[State] = &[
    PowerCut(AfterRecord),
    PowerCut(AfterMkfs),
    PowerCut(AfterMount),
];
const HEADER_NO_RECORD: &[State] = &[PowerCut(AfterLuksFormat), PowerCut(AfterLuksOpen)];

/// The table. README's lifecycle table is this, rendered by [`markdown`].
/// A row: the README's words for the states; the states; the classes it
/// applies to; what `provision` does; its exit code; the data; the
/// real-kernel tests that show it.
#[rustfmt::skip]
pub static TABLE: &[Row] = &[
    row("first boot: blank disks", &[FirstBoot], ANY, NEW, 0, Empty,
        "vm `three_disks_escrow_recover_next_boot_teardown` (boot 1, ext4 and xfs); system `debian12_full_boot`"),
    row("a re-run in the same boot", &[Rerun], ANY, Nothing, 0, Mounted,
        "vm `three_disks_...` (multi-disk.sh); faults `crash_rollback_and_lock`"),
    row("`umount`, then a re-run; a soft-reboot", &[Unmounted], ANY, Remount, 0, Mounted,
        "vm `three_disks_...` (multi-disk.sh); system `debian13_full_boot` (soft-reboot)"),
    row("this boot's volume mounted elsewhere", &[MountedElsewhere], ANY, Refuse, 3, Untouched,
        "fixture `mounted-elsewhere`"),
    row("a run of this boot killed before mkfs (open, no file system)", &[OpenUnfinished], ANY, Replace(Unfinished), 0, NoData,
        "faults `crash_rollback_and_lock` (SIGKILL at each step)"),
    row("reboot, kernel panic, hard reset: every member here", &[Reboot], UNLOCK, Unlock, 0, Mounted,
        "vm `tpm2_unlock_across_a_reboot_and_kept_on_another_tpm` (boot 2, no escrow; x86-64 and arm64); kms `kms_and_tpm2_pins_on_a_real_kernel` (boot 2: kms, 2 of tpm2 and kms); system `debian12_unlock_with_tpm_and_tang` (boot 2)"),
    row("the same, its pins not giving the key (tang or KMS down, another TPM, changed PCRs)", &[RebootPinsDown], UNLOCK, Unlock, 5, KeptForOps,
        "vm `tpm2_unlock_...` (boots 3, 4: another TPM, PCR 7 changed); kms `kms_and_tpm2_pins_on_a_real_kernel` (boot 3: KMS unreachable); system `debian12_unlock_with_tpm_and_tang` (boots 3, 4)"),
    row("reboot, kernel panic, hard reset, without `[unlock]`", REBOOTS, FAIL, Refuse, 3, Untouched,
        "fixture `earlier-boot-fail`"),
    row("reboot, kernel panic, hard reset, without `[unlock]`", REBOOTS, ESCROW_KEEP, Keep, 5, KeptForOps,
        "vm `three_disks_...` (next-boot.sh: hashes unchanged, the runbook reads the data); system `debian12_full_boot` (boots 2, 3)"),
    row("reboot, kernel panic, hard reset, without `[unlock]`", REBOOTS, ESCROW, Replace(Reformat), 0, Erased,
        "fixture `earlier-boot-reformat`"),
    row("reboot, kernel panic, hard reset, without `[unlock]`", REBOOTS, ANY, Replace(Unreadable), 0, Lost,
        "faults `power_loss` (boots 2 to 7)"),
    row("stop/start: new blank disks; the old record stays, unused", &[StopStart], ANY, NEW, 0, Lost,
        "system `debian12_unlock_with_tpm_and_tang` (boot 5: the pins never asked)"),
    row("reboot, the first member (it holds the header) missing or late", &[HeaderDiskMissing], RECORD_FAIL, Refuse, 3, Untouched,
        ""),
    row("reboot, the first member (it holds the header) missing or late", &[HeaderDiskMissing], RECORD_KEEP, Keep, 5, KeptForOps,
        "vm `escrowed_volume_with_its_header_disk_missing_is_kept` (the other member's hash unchanged; then recover reads it)"),
    row("reboot, the first member (it holds the header) missing or late", &[HeaderDiskMissing], RECORD, Replace(Reformat), 0, Erased,
        ""),
    row("reboot, the first member (it holds the header) missing or late", &[HeaderDiskMissing], ANY, NEW, 0, Lost,
        ""),
    row("reboot, another member missing or late", &[OtherMemberMissing], FAIL, Refuse, 3, Untouched,
        ""),
    row("reboot, another member missing or late", &[OtherMemberMissing], RECORD_KEEP, Keep, 5, KeptForOps,
        ""),
    row("reboot, another member missing or late", &[OtherMemberMissing], RECORD, Replace(Reformat), 0, Erased,
        ""),
    row("reboot, another member missing or late", &[OtherMemberMissing], ANY, Replace(Unreadable), 0, Lost,
        ""),
    row("reboot, and a disk with someone else's data added", &[ForeignDiskAdded], UNLOCK, Unlock, 0, Mounted,
        ""),
    row("reboot, and a disk with someone else's data added", &[ForeignDiskAdded], FAIL, Refuse, 3, Untouched,
        ""),
    row("reboot, and a disk with someone else's data added", &[ForeignDiskAdded], ESCROW_KEEP, Keep, 5, KeptForOps,
        ""),
    row("reboot, and a disk with someone else's data added", &[ForeignDiskAdded], ANY, Refuse, 3, Untouched,
        "faults `bad_input_and_wrong_disk_matrix`"),
    row("power cut after the LUKS format or open (no record yet)", HEADER_NO_RECORD, FAIL, Refuse, 3, Untouched,
        ""),
    row("power cut after the LUKS format or open (no record yet)", HEADER_NO_RECORD, ANY, Replace(Unreadable), 0, NoData,
        "faults `power_loss`"),
    row("power cut after the record (envelope, unlock file), mkfs or the mount, before the record says mounted", NEVER_MOUNTED, FAIL, Refuse, 3, Untouched,
        ""),
    row("power cut after the record (envelope, unlock file), mkfs or the mount, before the record says mounted", NEVER_MOUNTED, RECORD, Replace(NeverMounted), 0, NoData,
        "faults `power_loss` (with escrow; xfs cut after mkfs and after mount)"),
    row("power cut after the record (envelope, unlock file), mkfs or the mount, before the record says mounted", NEVER_MOUNTED, ANY, Replace(Unreadable), 0, NoData,
        "faults `power_loss`"),
    row("power cut after the wipe or the array's build", &[PowerCut(AfterWipe), PowerCut(AfterMdBuild)], ANY, NEW, 0, NoData,
        "faults `power_loss`"),
    row("`ephemera discard` of a kept volume (its header erased, or marked discarded while its header's disk was missing)", &[Discarded, DiscardedMissing], ANY, NEW, 0, DiscardedByOps,
        "system `debian12_full_boot` (boot 3: discard); fixture `earlier-boot-header-disk-missing-discarded`"),
];

/// The row for `state` and `class`: the first that applies.
pub fn expected(class: &Class, state: State) -> Option<&'static Row> {
    TABLE
        .iter()
        .find(|r| r.states.contains(&state) && r.when.applies(class))
}

/// The rows that cover a reboot of this class's mounted volume: the
/// events watcher says a reboot loses no data only where this is an
/// unlock with its pins answering.
pub fn reboot_keeps_data(class: &Class) -> bool {
    expected(class, Reboot).is_some_and(|r| r.data == Data::Mounted)
}

impl Plan {
    /// The plan in the table's words.
    pub fn action(&self) -> Action {
        match self {
            Plan::AlreadyProvisioned { .. } => Action::Nothing,
            Plan::Remount { .. } => Action::Remount,
            Plan::Unlock { .. } => Action::Unlock,
            Plan::Keep { .. } => Action::Keep,
            Plan::NothingToDo { .. } => Action::Nothing,
            Plan::Provision(p) => match &p.over {
                None => Action::New,
                Some(Over::Unfinished { .. }) => Action::Replace(Replaces::Unfinished),
                Some(Over::NeverMounted { .. }) => Action::Replace(Replaces::NeverMounted),
                Some(Over::Unreadable { .. }) => Action::Replace(Replaces::Unreadable),
                Some(Over::Reformat { .. }) => Action::Replace(Replaces::Reformat),
            },
        }
    }
}

/// The table for the README: one line a row, its states and its classes,
/// what `provision` does, its exit code, the data, the real-kernel tests.
pub fn markdown() -> String {
    let mut s = String::from(
        "| the node at boot | configuration | `provision` | exit | the data | shown on a real kernel by |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut last = "";
    for r in TABLE {
        // A label is written once for the rows that follow it.
        let first = r.label != last;
        let label = if first { r.label } else { "" };
        last = r.label;
        let action = match (r.action, r.exit) {
            (Action::Unlock, 5) => {
                "asks its pins for the key; they do not give it within `unlock.wait_secs`: keeps it"
            }
            (a, _) => a.words(),
        };
        s += &format!(
            "| {label} | {} | {action} | {} | {} | {} |\n",
            r.when.words(first),
            r.exit,
            r.data.words(),
            if r.shown_by.is_empty() {
                "tests/lifecycle.rs only"
            } else {
                r.shown_by
            }
        );
    }
    s
}
