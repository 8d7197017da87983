//! `[[bind]]` entries: node directories placed on the encrypted volume, as
//! the config gives them, and their validation before anything is written.
//! `volume::bind` makes and removes the binds.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One `[[bind]]` entry of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindEntry {
    /// The directory on the node (the bind target), absolute.
    pub path: PathBuf,
    /// Its directory on the volume, relative to `mount.path`; by default
    /// `path` without its leading `/` (`/var/lib/containerd` is
    /// `var/lib/containerd` on the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<PathBuf>,
}

impl BindEntry {
    pub fn subdir(&self) -> PathBuf {
        match &self.subdir {
            Some(s) => s.clone(),
            None => self.path.strip_prefix("/").unwrap_or(&self.path).into(),
        }
    }
}

/// Checks the entries against each other and against the rest of the
/// config, with no I/O. One line per problem, naming the entry.
pub fn validate(entries: &[BindEntry], mount: &Path, escrow: &Path) -> Result<()> {
    let bad = |i: usize, e: &BindEntry, why: String| {
        Err(Error::Usage(format!(
            "config bind[{i}] (path = {:?}): {why}",
            e.path.display().to_string()
        )))
    };
    for (i, e) in entries.iter().enumerate() {
        let p = &e.path;
        if !p.is_absolute() {
            return bad(i, e, "path is not an absolute path".into());
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return bad(i, e, "path must not contain \"..\"".into());
        }
        if p == Path::new("/") {
            return bad(i, e, "path must not be /".into());
        }
        if let Some(c) = super::paths::clash(p) {
            return bad(i, e, c.describe("a bind"));
        }
        if p.starts_with(mount) {
            return bad(
                i,
                e,
                format!("path is inside the volume (mount.path {})", mount.display()),
            );
        }
        if mount.starts_with(p) {
            return bad(
                i,
                e,
                format!(
                    "a bind there would hide the volume's mount.path {}",
                    mount.display()
                ),
            );
        }
        if escrow.starts_with(p) {
            return bad(
                i,
                e,
                format!(
                    "a bind there would hide the escrow envelope {}",
                    escrow.display()
                ),
            );
        }
        let s = e.subdir();
        let plain = s.components().all(|c| matches!(c, Component::Normal(_)))
            && s.components().next().is_some();
        if !plain {
            return bad(
                i,
                e,
                format!(
                    "subdir {:?} must be a relative path on the volume, without \"..\"",
                    s.display().to_string()
                ),
            );
        }
        if s.starts_with("lost+found") || s.starts_with(STAGING) {
            return bad(
                i,
                e,
                format!(
                    "subdir {} is kept for the filesystem or ephemera",
                    s.display()
                ),
            );
        }
        for (j, o) in entries.iter().enumerate().take(i) {
            if p.starts_with(&o.path) || o.path.starts_with(p) {
                return bad(
                    i,
                    e,
                    format!(
                        "overlaps bind[{j}] (path = {:?}); list only the outer directory",
                        o.path.display().to_string()
                    ),
                );
            }
            let os = o.subdir();
            if s.starts_with(&os) || os.starts_with(&s) {
                return bad(
                    i,
                    e,
                    format!(
                        "its subdir {} overlaps bind[{j}]'s subdir {} on the volume",
                        s.display(),
                        os.display()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Where copies are made before they are renamed into place.
pub const STAGING: &str = ".ephemera-staging";

/// An entry, for tests here and in `volume::bind`.
#[cfg(test)]
pub(crate) fn entry(path: &str, subdir: Option<&str>) -> BindEntry {
    BindEntry {
        path: path.into(),
        subdir: subdir.map(PathBuf::from),
    }
}

#[cfg(test)]
mod tests {
    use super::entry as e;
    use super::*;

    fn check(entries: &[BindEntry]) -> std::result::Result<(), String> {
        validate(
            entries,
            Path::new("/mnt/ephemeral"),
            Path::new("/var/lib/ephemera/escrow.json"),
        )
        .map_err(|e| match e {
            Error::Usage(m) => m,
            other => panic!("not a usage error: {other:?}"),
        })
    }

    #[test]
    fn the_usual_sets_pass() {
        check(&[
            e("/var/lib/containerd", None),
            e("/var/lib/kubelet", None),
            e("/var/log/pods", None),
            e("/var/lib/docker", Some("docker")),
            e("/var/lib/ecs/data", None),
        ])
        .unwrap();
        check(&[]).unwrap();
    }

    #[test]
    fn bad_entries_are_refused_with_one_line_each() {
        let cases: &[(&[BindEntry], &str)] = &[
            (&[e("var/lib/containerd", None)], "not an absolute path"),
            (&[e("/", None)], "must not be /"),
            (&[e("/etc", None)], "system directory"),
            (&[e("/etc/kubernetes", None)], "/etc is a system directory"),
            (&[e("/usr/local", None)], "/usr is a system directory"),
            (&[e("/var", None)], "would hide /var/lib/dpkg"),
            (&[e("/var/lib", None)], "would hide /var/lib/dpkg"),
            (&[e("/var/log", None)], "would hide /var/log/journal"),
            (&[e("/mnt/ephemeral/x", None)], "inside the volume"),
            (&[e("/mnt/ephemeral", None)], "inside the volume"),
            (&[e("/mnt", None)], "hide the volume"),
            (
                &[e("/var/lib/ephemera", None)],
                "would hide /var/lib/ephemera",
            ),
            (&[e("/srv/../etc", None)], "\"..\""),
            (&[e("/srv/a", Some("/abs"))], "subdir"),
            (&[e("/srv/a", Some("../up"))], "subdir"),
            (&[e("/srv/a", Some(""))], "subdir"),
            (&[e("/srv/a", Some("lost+found"))], "lost+found"),
            (
                &[
                    e("/var/lib/kubelet", None),
                    e("/var/lib/kubelet/pods", None),
                ],
                "overlaps bind[0]",
            ),
            (
                &[
                    e("/var/lib/kubelet/pods", None),
                    e("/var/lib/kubelet", None),
                ],
                "overlaps bind[0]",
            ),
            (&[e("/srv/a", None), e("/srv/a/", None)], "overlaps bind[0]"),
            (
                &[e("/srv/a", Some("d")), e("/srv/b", Some("d/e"))],
                "subdir d/e overlaps",
            ),
        ];
        for (entries, needle) in cases {
            let m = check(entries).expect_err(&format!("{entries:?} passed"));
            assert!(
                m.contains(needle),
                "{entries:?}: {m:?} should say {needle:?}"
            );
            assert!(m.starts_with("config bind["), "{m:?}");
            assert!(!m.contains('\n'), "{m:?}");
        }
        let m = validate(
            &[e("/srv", None)],
            Path::new("/mnt/ephemeral"),
            Path::new("/srv/ephemera/escrow.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("hide the escrow envelope"), "{m}");
    }
}
