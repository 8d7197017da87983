//! Every key the config accepts, with its default, found from the code
//! (for the tests: the wrong-type walk, and the reference in docs/CONFIG.md
//! and the man page). A new key cannot be missed: each table's list of
//! keys is what serde itself names when given an unknown key there.

use std::path::PathBuf;

use super::bind::BindEntry;
use super::store::Store;
use super::unlock::{Kms, Tang};
use super::Config;

/// One key: `disks.min_disks`, `unlock.tang[].url`, `bind[].path`.
#[derive(Debug, Clone)]
pub struct Key {
    /// As the reference writes it: `[]` for an entry of a list of tables.
    pub name: String,
    /// The path to it in `sample()`.
    pub at: Vec<Seg>,
    pub default: Default,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    /// The first entry of a list of tables.
    First,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Default {
    /// Left out, it has this value.
    Value(toml::Value),
    /// Left out, it is unset (an `Option`).
    Unset,
    /// It must be given (the tables of a list each need it).
    Required,
}

/// A config that sets every key, every optional table and one entry of
/// every list, as TOML.
pub fn sample() -> toml::Table {
    let mut c = Config::default();
    c.escrow.public_key = Some("/etc/ephemera/escrow.pub.pem".into());
    c.escrow.public_keys = vec!["/etc/ephemera/ops-b.pub.pem".into()];
    c.escrow.store = Some(Store {
        url: "https://s3.eu-west-1.amazonaws.com".into(),
        bucket: "fleet-escrow".into(),
        prefix: "ephemera/".into(),
        region: Some("eu-west-1".into()),
        ca_file: Some("/etc/ephemera/store-ca.pem".into()),
        timeout_secs: 20,
        insecure_http: false,
    });
    c.events.hook = Some("/usr/local/sbin/ephemera-hook".into());
    c.unlock.kms = Some(Kms {
        key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            .into(),
        region: Some("eu-west-1".into()),
        endpoint: Some("https://kms.eu-west-1.amazonaws.com".into()),
        ca_file: Some("/etc/ephemera/kms-ca.pem".into()),
    });
    c.unlock.tang = vec![Tang {
        url: "http://tang.internal:7500".into(),
        thp: "DWnbBv9Ul6YVKNFdV5Mun_pRTkfIMXcxwH1NDbVBDq0".into(),
    }];
    c.bind = vec![BindEntry {
        path: "/var/lib/containerd".into(),
        subdir: Some(PathBuf::from("containerd")),
    }];
    toml::Table::try_from(&c).expect("the config serialises")
}

pub fn get<'a>(t: &'a toml::Table, at: &[Seg]) -> Option<&'a toml::Value> {
    let (Seg::Key(k), rest) = at.split_first()? else {
        return None;
    };
    let mut v = t.get(k)?;
    for s in rest {
        v = match s {
            Seg::Key(k) => v.as_table()?.get(k)?,
            Seg::First => v.as_array()?.first()?,
        };
    }
    Some(v)
}

pub fn get_mut<'a>(t: &'a mut toml::Table, at: &[Seg]) -> &'a mut toml::Value {
    let (Seg::Key(k), rest) = at.split_first().expect("a path") else {
        panic!("a path starts with a key")
    };
    let mut v = t.get_mut(k).expect("in the sample");
    for s in rest {
        v = match s {
            Seg::Key(k) => v.as_table_mut().and_then(|t| t.get_mut(k)),
            Seg::First => v.as_array_mut().and_then(|a| a.first_mut()),
        }
        .expect("in the sample");
    }
    v
}

/// The table at `at` (the root when empty).
fn table_mut<'a>(t: &'a mut toml::Table, at: &[Seg]) -> &'a mut toml::Table {
    if at.is_empty() {
        t
    } else {
        get_mut(t, at).as_table_mut().expect("a table")
    }
}

/// The key as an error message names it: `bind[0].path`.
pub fn error_name(at: &[Seg]) -> String {
    let mut s = String::new();
    for seg in at {
        match seg {
            Seg::Key(k) if s.is_empty() => s += k,
            Seg::Key(k) => s += &format!(".{k}"),
            Seg::First => s += "[0]",
        }
    }
    s
}

fn parse(t: &toml::Table) -> crate::error::Result<Config> {
    Config::parse(
        &toml::to_string(t).expect("TOML"),
        std::path::Path::new("t.toml"),
    )
}

/// The keys serde accepts in the table at `at`, from its message about an
/// unknown one.
fn accepted(at: &[Seg]) -> Vec<String> {
    let mut t = sample();
    table_mut(&mut t, at).insert("zz_unknown".into(), 0.into());
    let msg = parse(&t).expect_err("an unknown key").to_string();
    let expected = msg
        .split_once("expected ")
        .unwrap_or_else(|| panic!("{msg}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Every key, walked from the sample, each table's keys checked against
/// serde's list for it.
pub fn all() -> Vec<Key> {
    let mut out = Vec::new();
    walk(&[], "", &mut out);
    out
}

fn walk(at: &[Seg], name: &str, out: &mut Vec<Key>) {
    let sample = sample();
    let table = match at {
        [] => &sample,
        _ => get(&sample, at)
            .and_then(|v| v.as_table())
            .expect("a table"),
    };
    let mut have: Vec<String> = table.keys().cloned().collect();
    let mut want = accepted(at);
    have.sort();
    want.sort();
    assert_eq!(
        have, want,
        "keys::sample() does not set every key of [{name}]"
    );
    for (k, v) in table {
        let mut here = at.to_vec();
        here.push(Seg::Key(k.clone()));
        let key_name = if name.is_empty() {
            k.clone()
        } else {
            format!("{name}.{k}")
        };
        let default = default_of(&here);
        let list_of_tables = v
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(toml::Value::is_table);
        if v.is_table() || list_of_tables {
            // A section: listed itself when it may be left out empty
            // (an optional table, an empty list), then its keys.
            let optional = match &default {
                Default::Unset => true,
                Default::Value(toml::Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if optional {
                out.push(Key {
                    name: key_name.clone(),
                    at: here.clone(),
                    default,
                });
            }
            if list_of_tables {
                here.push(Seg::First);
                walk(&here, &format!("{key_name}[]"), out);
            } else {
                walk(&here, &key_name, out);
            }
        } else {
            out.push(Key {
                name: key_name,
                at: here,
                default,
            });
        }
    }
}

/// What a key is when left out: the sample without it, parsed, then
/// written back.
fn default_of(at: &[Seg]) -> Default {
    let mut t = sample();
    let (Seg::Key(k), parent) = at.split_last().expect("a key") else {
        panic!("a key")
    };
    table_mut(&mut t, parent).remove(k);
    match parse(&t) {
        Err(_) => Default::Required,
        Ok(c) => {
            let back = toml::Table::try_from(&c).expect("the config serialises");
            match get(&back, at) {
                Some(v) => Default::Value(v.clone()),
                None => Default::Unset,
            }
        }
    }
}
