//! ephemera's own threshold over the unlock pins (unlock file version 2):
//! the volume key is split with the Shamir code escrow uses
//! (`keys::shamir`), one part per pin, and any `threshold` of them give it
//! back, whatever mix of pins they come from:
//! - `tpm2`: sealed to this instance's TPM under a PCR policy (`tpm2`,
//!   tss-esapi, no clevis);
//! - `kms`: encrypted by an AWS KMS key under this instance's and this
//!   volume's encryption context (`kms`);
//! - `tang`: bound to a tang server by clevis (`tang`).
//!
//! With threshold 1 each part is the key itself. At boot the pins are
//! asked in turn until `threshold` have answered; one that refuses for
//! good (another TPM, changed PCRs, a ciphertext KMS will never open) is
//! not asked again, and when too few pins are left to reach the threshold
//! the unlock fails at once instead of waiting for `wait_secs`.

pub mod kms;
pub mod tang;
pub mod tpm2;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::unlock::{Kms, Unlock};
use crate::error::{Error, Result};
use crate::keys::key::VolumeKey;
use crate::keys::shamir;

/// One pin's part of the key, as the unlock file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pin", rename_all = "lowercase")]
pub enum Slot {
    Tpm2(tpm2::Slot),
    Kms(kms::Slot),
    Tang(tang::Slot),
}

impl Slot {
    /// For people: `tpm2`, `kms KEY`, `tang URL`.
    pub fn describe(&self) -> String {
        match self {
            Slot::Tpm2(_) => "tpm2".into(),
            Slot::Kms(k) => format!("kms {}", k.key_id),
            Slot::Tang(t) => format!("tang {}", t.url),
        }
    }

    /// The fields are of the shape ephemera writes (parse time).
    pub fn check(&self) -> std::result::Result<(), String> {
        let line = |s: &str| s.len() <= 2048 && !s.contains(|c: char| c.is_control() || c == ',');
        match self {
            Slot::Tpm2(t) => {
                tpm2::selection_ok(&t.pcr_bank, &t.pcrs)?;
                if t.public.len() > 4096 || t.private.len() > 4096 {
                    return Err("its tpm2 public or private part is longer than 4 KiB".into());
                }
                Ok(())
            }
            Slot::Kms(k) => kms::check(k),
            Slot::Tang(t) if line(&t.url) => tang::check(t),
            Slot::Tang(_) => Err("a tang url is not one line".into()),
        }
    }
}

/// Why a pin did not give its part; `permanent` when asking again cannot
/// change the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub permanent: bool,
    pub why: String,
}

/// The calls the `kms` pin makes to AWS KMS (`node::kms::Aws` on a node;
/// the network lives in `node`, above this layer).
pub trait KmsPin {
    /// Encrypts `part` under this instance's context for `luks_uuid`.
    fn seal(
        &self,
        part: &[u8],
        k: &Kms,
        luks_uuid: &str,
        deadline: Instant,
    ) -> Result<kms::Slot, Failure>;
    /// Decrypts the part of `s` under this instance's context for `luks_uuid`.
    fn unseal(
        &self,
        s: &kms::Slot,
        luks_uuid: &str,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, Failure>;
}

/// Where the pins are: the TPM's TCTI (`tpm2::DEVICE` on a node) and KMS.
pub struct Reach {
    pub tcti: String,
    pub kms: Box<dyn KmsPin>,
}

/// `2 of tpm2, kms KEY, tang URL`.
pub fn describe(threshold: u32, slots: &[Slot]) -> String {
    let names: Vec<String> = slots.iter().map(Slot::describe).collect();
    format!("{threshold} of {}", names.join(", "))
}

/// Splits `key` among the pins of `u` and binds each part, within
/// `u.wait_secs`, in the order of the unlock file: tpm2, kms, tang. Any pin
/// that fails fails the binding (a volume bound to fewer pins than the
/// config says would unlock differently than ops expect). Returns the slots.
pub fn seal(key: &VolumeKey, u: &Unlock, luks_uuid: &str, reach: &Reach) -> Result<Vec<Slot>> {
    let n = u.pins() as usize;
    let deadline = Instant::now() + Duration::from_secs(u.wait_secs);
    let parts = shamir::split(key, u.threshold, n);
    let mut parts = parts.iter();
    let mut next = || parts.next().expect("one part per pin");
    let fail = |f: Failure| Error::Failed(format!("binding the key: {}", f.why));
    let mut slots = Vec::with_capacity(n);
    if u.tpm2 {
        let s = tpm2::seal(next(), &u.tpm2_pcr_bank, &u.tpm2_pcrs, &reach.tcti).map_err(fail)?;
        slots.push(Slot::Tpm2(s));
    }
    if let Some(k) = &u.kms {
        slots.push(Slot::Kms(
            reach
                .kms
                .seal(next(), k, luks_uuid, deadline)
                .map_err(fail)?,
        ));
    }
    for t in &u.tang {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        slots.push(Slot::Tang(tang::seal(next(), t, left).map_err(fail)?));
    }
    Ok(slots)
}

/// One attempt at most this long for a pin that talks to a server (a tang
/// server or KMS that takes the connection and never answers).
const ATTEMPT: Duration = Duration::from_secs(20);
/// Between two rounds: the network or the TPM may still be coming up.
const RETRY: Duration = Duration::from_secs(2);

fn ask(
    s: &Slot,
    luks_uuid: &str,
    reach: &Reach,
    deadline: Instant,
) -> std::result::Result<Zeroizing<Vec<u8>>, Failure> {
    let attempt_end = deadline.min(Instant::now() + ATTEMPT);
    match s {
        Slot::Tpm2(t) => tpm2::unseal(t, &reach.tcti),
        Slot::Kms(k) => reach.kms.unseal(k, luks_uuid, attempt_end),
        Slot::Tang(t) => tang::unseal(
            t,
            attempt_end
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
        ),
    }
}

/// The key from `threshold` of `slots`, asking each pin until `wait` has
/// passed. Fails at once when the pins that refused for good leave fewer
/// than `threshold`. `key_bits` is the volume's key length.
pub fn open(
    threshold: u32,
    slots: &[Slot],
    luks_uuid: &str,
    key_bits: u32,
    reach: &Reach,
    wait: Duration,
) -> Result<VolumeKey> {
    let deadline = Instant::now() + wait;
    let t = threshold.max(1) as usize;
    let mut parts: Vec<Option<Zeroizing<Vec<u8>>>> = vec![None; slots.len()];
    let mut last: Vec<Option<Failure>> = vec![None; slots.len()];
    let mut round = 0;
    loop {
        round += 1;
        for (i, s) in slots.iter().enumerate() {
            let done = parts.iter().filter(|p| p.is_some()).count();
            if done >= t || parts[i].is_some() || last[i].as_ref().is_some_and(|f| f.permanent) {
                continue;
            }
            let asked = Instant::now();
            match ask(s, luks_uuid, reach, deadline) {
                Ok(p) => {
                    tracing::info!(
                        ms = asked.elapsed().as_millis() as u64,
                        "LUKS UUID {luks_uuid}: {} gave its part (round {round})",
                        s.describe()
                    );
                    parts[i] = Some(p);
                    last[i] = None;
                }
                Err(f) => {
                    tracing::warn!("LUKS UUID {luks_uuid}: {}", f.why);
                    last[i] = Some(f);
                }
            }
        }
        let got: Vec<&[u8]> = parts.iter().flatten().map(|p| p.as_slice()).collect();
        if got.len() >= t {
            let mut key = shamir::combine(threshold, &got[..t], key_bits).map_err(|e| {
                Error::Failed(format!("LUKS UUID {luks_uuid}: the pins' parts: {e}"))
            })?;
            return VolumeKey::take(&mut key);
        }
        let refused = last.iter().flatten().filter(|f| f.permanent).count();
        let why = || {
            last.iter()
                .flatten()
                .map(|f| f.why.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        if slots.len() - refused < t {
            return Err(Error::Failed(format!(
                "{} (refused for good: {refused} of {} pins, {t} needed; not asked again)",
                why(),
                slots.len()
            )));
        }
        if Instant::now() + RETRY >= deadline {
            return Err(Error::Failed(format!(
                "{} (gave up after {round} rounds in {} s, unlock.wait_secs)",
                why(),
                wait.as_secs()
            )));
        }
        std::thread::sleep(RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A KMS that answers with `answer` and counts the calls.
    struct FakeKms {
        calls: Arc<AtomicU32>,
        answer: std::result::Result<Vec<u8>, Failure>,
    }

    impl KmsPin for FakeKms {
        fn seal(
            &self,
            _: &[u8],
            _: &Kms,
            _: &str,
            _: Instant,
        ) -> std::result::Result<kms::Slot, Failure> {
            unreachable!()
        }
        fn unseal(
            &self,
            _: &kms::Slot,
            _: &str,
            _: Instant,
        ) -> std::result::Result<Zeroizing<Vec<u8>>, Failure> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer.clone().map(Zeroizing::new)
        }
    }

    fn kms_slot() -> Slot {
        Slot::Kms(kms::Slot {
            key_id: "alias/eph".into(),
            region: "eu-west-1".into(),
            endpoint: None,
            ca_file: None,
            context: kms::context("arn:x", "u"),
            ciphertext: "AQID".into(),
        })
    }

    fn reach(answer: std::result::Result<Vec<u8>, Failure>) -> (Reach, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let r = Reach {
            tcti: "device:/nonexistent".into(),
            kms: Box::new(FakeKms {
                calls: calls.clone(),
                answer,
            }),
        };
        (r, calls)
    }

    #[test]
    fn a_refusal_for_good_is_not_asked_again_and_fails_at_once() {
        let (r, calls) = reach(Err(Failure {
            permanent: true,
            why: "kms: InvalidCiphertextException".into(),
        }));
        let e = open(1, &[kms_slot()], "u", 512, &r, Duration::from_secs(3600))
            .unwrap_err()
            .to_string();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{e}");
        assert!(
            e.contains("refused for good") && e.contains("InvalidCiphertextException"),
            "{e}"
        );
        // Two pins, threshold 2: one refusal for good is enough to stop; the
        // other pin (a TPM that is not there) is asked once, and only once.
        let (r, calls) = reach(Err(Failure {
            permanent: true,
            why: "kms: IncorrectKeyException".into(),
        }));
        let tpm = Slot::Tpm2(tpm2::Slot {
            pcr_bank: "sha256".into(),
            pcrs: "7".into(),
            public: "AAA=".into(),
            private: "AAA=".into(),
        });
        let e = open(
            2,
            &[tpm, kms_slot()],
            "u",
            512,
            &r,
            Duration::from_secs(3600),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{e}");
        assert!(e.contains("1 of 2 pins, 2 needed"), "{e}");
    }

    #[test]
    fn what_can_recover_is_asked_again_until_wait_secs_then_opens() {
        let (r, calls) = reach(Err(Failure {
            permanent: false,
            why: "kms: Decrypt at https://kms: connection refused".into(),
        }));
        let e = open(1, &[kms_slot()], "u", 512, &r, Duration::from_secs(3))
            .unwrap_err()
            .to_string();
        assert!(calls.load(Ordering::SeqCst) >= 2, "{e}");
        assert!(
            e.contains("unlock.wait_secs") && e.contains("connection refused"),
            "{e}"
        );
        // The key itself from the one pin (threshold 1).
        let key = VolumeKey::generate(512).unwrap();
        let (r, calls) = reach(Ok(key.as_bytes().to_vec()));
        let got = open(1, &[kms_slot()], "u", 512, &r, Duration::from_secs(3)).unwrap();
        assert_eq!(got.as_bytes(), key.as_bytes());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn slots_are_tagged_by_pin_and_refuse_unknown_fields() {
        let t: Slot =
            serde_json::from_str(r#"{"pin":"tang","url":"http://t:7500","clevis":"a.b.c.d.e"}"#)
                .unwrap();
        assert_eq!(t.describe(), "tang http://t:7500");
        assert!(serde_json::from_str::<Slot>(
            r#"{"pin":"tang","url":"http://t:7500","clevis":"x","extra":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Slot>(r#"{"pin":"sss","url":"x"}"#).is_err());
        let k = Slot::Kms(kms::Slot {
            key_id: "alias/eph".into(),
            region: "eu-west-1".into(),
            endpoint: None,
            ca_file: None,
            context: kms::context(
                "arn:aws:ec2:eu-west-1:111122223333:instance/i-01234567",
                "u",
            ),
            ciphertext: "AQID".into(),
        });
        let text = serde_json::to_string(&k).unwrap();
        assert!(
            text.starts_with(r#"{"pin":"kms","key_id":"alias/eph""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Slot>(&text).unwrap(), k);
        k.check().unwrap();
        assert_eq!(
            describe(2, &[k, t]),
            "2 of kms alias/eph, tang http://t:7500"
        );
    }
}
