//! Discovery: what block devices the kernel has and who uses them, read from
//! sysfs and procfs through a `Host` root. No device is opened here; probing
//! a disk's contents is `probe`'s job.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::host::Host;

/// The device-mapper name of ephemera's volume.
pub const DM_NAME: &str = "ephemera";
/// The md array name: the kernel makes `/dev/md_ephemera` for it.
pub const MD_NAME: &str = "md_ephemera";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Kernel name, `nvme1n1`.
    pub name: String,
    /// `major:minor`
    pub devno: String,
    pub model: String,
    pub serial: String,
    pub size_bytes: u64,
    pub read_only: bool,
    /// Partitions of the disk, kernel names.
    pub partitions: Vec<String>,
    /// Block devices stacked on the disk or one of its partitions.
    pub holders: Vec<String>,
    /// Mount points of the disk or one of its partitions.
    pub mounts: Vec<String>,
    /// The disk or one of its partitions is active swap.
    pub swap: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountEntry {
    pub devno: String,
    /// The directory of the filesystem mounted there: `/` for the whole
    /// filesystem, the subdirectory for a bind.
    pub root: String,
    pub path: String,
    pub fstype: String,
}

/// An md array ephemera made in this boot (ephemera's arrays keep no
/// superblock, so one never outlives a boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MdArray {
    pub name: String,
    /// Member kernel names in raid-disk order.
    pub members: Vec<String>,
    pub chunk_kib: u32,
    pub level: String,
}

/// ephemera's dm-crypt mapping, if active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmVolume {
    /// `dm-0`
    pub kname: String,
    pub devno: String,
    /// dm uuid, `CRYPT-LUKS2-<uuid without dashes>-ephemera`.
    pub uuid: String,
    /// Kernel names of the devices below it.
    pub slaves: Vec<String>,
    /// Every mount of the device, whatever its root: the whole
    /// filesystem's and the binds of its subdirectories, which keep the
    /// volume in use after the whole filesystem's own unmount.
    pub mounts: Vec<MountEntry>,
}

impl DmVolume {
    /// The whole filesystem's mount (root `/`), if any: not one of its
    /// binds, which may stay after the volume's own unmount.
    pub fn mount(&self) -> Option<&MountEntry> {
        self.mounts.iter().find(|m| m.root == "/")
    }

    /// The LUKS UUID in the dm uuid (`CRYPT-LUKS2-<uuid without
    /// dashes>-ephemera`), without dashes.
    pub fn luks_uuid_hex(&self) -> String {
        self.uuid
            .strip_prefix("CRYPT-LUKS2-")
            .and_then(|r| r.split('-').next())
            .unwrap_or_default()
            .to_string()
    }

    /// The LUKS UUID of the mapping, dashed as libcryptsetup writes it (and
    /// as envelopes, unlock files and their markers name it).
    pub fn luks_uuid(&self) -> String {
        let hex = self.luks_uuid_hex().to_ascii_lowercase();
        if hex.len() != 32 {
            return hex;
        }
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// Something has the volume's filesystem mounted, whole or through a
    /// bind: its data is in use.
    pub fn in_use(&self) -> bool {
        !self.mounts.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Every NVMe namespace, whatever its model.
    pub nvme: Vec<Disk>,
    pub md: Option<MdArray>,
    pub dm: Option<DmVolume>,
}

impl Inventory {
    pub fn disk(&self, name: &str) -> Option<&Disk> {
        self.nvme.iter().find(|d| d.name == name)
    }
}

/// `nvme0n1`, `nvme12n3`: a namespace head, not a partition (`nvme0n1p1`)
/// nor a hidden multipath path (`nvme0c0n1`).
fn is_nvme_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((ctrl, ns)) = rest.split_once('n') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ctrl) && digits(ns)
}

/// Sorts kernel names so that `nvme2n1` comes before `nvme10n1`.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
            }
            text.push(c);
        }
    }
    out.push((text, num.parse().unwrap_or(0)));
    out
}

/// The host's mount table, read now (`/proc/self/mountinfo` under its
/// root); empty when it cannot be read.
pub fn mount_table(host: &Host) -> Vec<MountEntry> {
    parse_mountinfo(&std::fs::read_to_string(host.path("proc/self/mountinfo")).unwrap_or_default())
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            Some(MountEntry {
                devno: f.get(2)?.to_string(),
                root: unescape_octal(f.get(3)?),
                path: unescape_octal(f.get(4)?),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// mountinfo and /proc/swaps write space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kernel names of active swap block devices, from `/proc/swaps`.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| unescape_octal(p).strip_prefix("/dev/").map(str::to_string))
        .collect()
}

pub fn discover(host: &Host) -> Inventory {
    let mounts = mount_table(host);
    let swaps = parse_swaps(&std::fs::read_to_string(host.path("proc/swaps")).unwrap_or_default());
    let sys_block = host.sys_block();
    let mut nvme: Vec<Disk> = host
        .entries(&sys_block)
        .into_iter()
        .filter(|n| is_nvme_namespace(n))
        .map(|name| read_disk(host, &name, &mounts, &swaps))
        .collect();
    nvme.sort_by_key(|d| natural_key(&d.name));
    Inventory {
        nvme,
        md: read_md(host),
        dm: read_dm(host, &mounts),
    }
}

fn read_disk(host: &Host, name: &str, mounts: &[MountEntry], swaps: &[String]) -> Disk {
    let dir = host.sys_block().join(name);
    let attr = |rel: &str| host.attr(&dir.join(rel)).unwrap_or_default();
    let partitions: Vec<String> = host
        .entries(&dir)
        .into_iter()
        .filter(|e| dir.join(e).join("partition").exists())
        .collect();
    let mut holders = host.entries(&dir.join("holders"));
    let mut devnos = BTreeMap::new();
    devnos.insert(attr("dev"), name.to_string());
    for p in &partitions {
        holders.extend(host.entries(&dir.join(p).join("holders")));
        devnos.insert(
            host.attr(&dir.join(p).join("dev")).unwrap_or_default(),
            p.clone(),
        );
    }
    let mount_points = mounts
        .iter()
        .filter(|m| devnos.contains_key(&m.devno))
        .map(|m| m.path.clone())
        .collect();
    let swap = swaps.iter().any(|s| devnos.values().any(|d| d == s));
    Disk {
        name: name.to_string(),
        devno: attr("dev"),
        model: attr("device/model"),
        serial: attr("device/serial"),
        size_bytes: attr("size").parse::<u64>().unwrap_or(0) * 512,
        read_only: attr("ro") == "1",
        partitions,
        holders,
        mounts: mount_points,
        swap,
    }
}

fn read_md(host: &Host) -> Option<MdArray> {
    let dir = host.sys_block().join(MD_NAME);
    if !dir.exists() {
        return None;
    }
    let md = dir.join("md");
    let mut members: Vec<(u32, String)> = host
        .entries(&md)
        .into_iter()
        .filter_map(|e| {
            let slot: u32 = e.strip_prefix("rd")?.parse().ok()?;
            let target = std::fs::read_link(md.join(&e)).ok()?;
            let dev = target.file_name()?.to_string_lossy().into_owned();
            Some((slot, dev.strip_prefix("dev-").unwrap_or(&dev).to_string()))
        })
        .collect();
    members.sort();
    Some(MdArray {
        name: MD_NAME.to_string(),
        members: members.into_iter().map(|(_, d)| d).collect(),
        chunk_kib: host
            .attr(&md.join("chunk_size"))
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(0)
            / 1024,
        level: host.attr(&md.join("level")).unwrap_or_default(),
    })
}

fn read_dm(host: &Host, mounts: &[MountEntry]) -> Option<DmVolume> {
    let sys_block = host.sys_block();
    host.entries(&sys_block)
        .into_iter()
        .filter(|n| n.starts_with("dm-"))
        .find(|n| host.attr(&sys_block.join(n).join("dm/name")).as_deref() == Some(DM_NAME))
        .map(|kname| {
            let dir = sys_block.join(&kname);
            let devno = host.attr(&dir.join("dev")).unwrap_or_default();
            DmVolume {
                uuid: host.attr(&dir.join("dm/uuid")).unwrap_or_default(),
                slaves: host.entries(&dir.join("slaves")),
                mounts: mounts
                    .iter()
                    .filter(|m| m.devno == devno)
                    .cloned()
                    .collect(),
                kname,
                devno,
            }
        })
}

/// NVMe controllers on the PCI bus that are not ready yet: not bound to a
/// driver, not `live`, or without a namespace. At boot the nvme driver
/// probes asynchronously; provisioning before it is done would miss disks.
pub fn nvme_pending(host: &Host) -> Vec<String> {
    const NVME_CLASS: &str = "0x010802";
    let pci = host.path("sys/bus/pci/devices");
    let mut pending = Vec::new();
    for dev in host.entries(&pci) {
        let dir = pci.join(&dev);
        if host.attr(&dir.join("class")).as_deref() != Some(NVME_CLASS) {
            continue;
        }
        if !dir.join("driver").exists() {
            pending.push(format!("{dev} (no driver bound yet)"));
            continue;
        }
        let ctrls = host.entries(&dir.join("nvme"));
        if ctrls.is_empty() {
            pending.push(format!("{dev} (no controller yet)"));
        }
        for c in ctrls {
            let cdir = dir.join("nvme").join(&c);
            let state = host.attr(&cdir.join("state")).unwrap_or_default();
            let has_ns = host.entries(&cdir).iter().any(|e| {
                e.strip_prefix(c.as_str())
                    .is_some_and(|rest| rest.starts_with('n') || rest.starts_with('c'))
            });
            if state != "live" || !has_ns {
                pending.push(format!(
                    "{c} at {dev} (state {state:?}, namespaces: {has_ns})"
                ));
            }
        }
    }
    pending
}

/// Waits until `nvme_pending` is empty, bounded by `bound`. Returns what
/// was still pending when the bound ran out (empty when all are ready).
pub fn wait_for_nvme(host: &Host, bound: std::time::Duration) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let pending = nvme_pending(host);
        if pending.is_empty() || start.elapsed() >= bound {
            return pending;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_readiness_from_pci() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path());
        let pci = t.path().join("sys/bus/pci/devices");
        let ctrl = |dev: &str, class: &str| {
            let d = pci.join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
            d
        };
        ctrl("0000:00:03.0", "0x020000"); // a network card: ignored
        let d = ctrl("0000:00:04.0", "0x010802");
        assert_eq!(nvme_pending(&host).len(), 1, "no driver yet");
        std::fs::create_dir_all(d.join("driver")).unwrap();
        std::fs::create_dir_all(d.join("nvme/nvme0")).unwrap();
        std::fs::write(d.join("nvme/nvme0/state"), "resetting\n").unwrap();
        assert!(nvme_pending(&host)[0].contains("resetting"));
        std::fs::write(d.join("nvme/nvme0/state"), "live\n").unwrap();
        assert!(nvme_pending(&host)[0].contains("namespaces: false"));
        std::fs::create_dir_all(d.join("nvme/nvme0/nvme0c0n1")).unwrap();
        assert!(nvme_pending(&host).is_empty());
        assert!(wait_for_nvme(&host, std::time::Duration::ZERO).is_empty());
    }

    #[test]
    fn namespace_names() {
        for n in ["nvme0n1", "nvme12n3"] {
            assert!(is_nvme_namespace(n), "{n}");
        }
        for n in ["nvme0n1p1", "nvme0c0n1", "nvme0", "nvmen1", "sda", "nvme0n"] {
            assert!(!is_nvme_namespace(n), "{n}");
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["nvme10n1", "nvme2n1", "nvme1n1", "nvme1n2"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["nvme1n1", "nvme1n2", "nvme2n1", "nvme10n1"]);
    }

    #[test]
    fn mountinfo_with_spaces() {
        let t = "36 35 259:1 / /mnt/with\\040space rw,noatime shared:1 - ext4 /dev/nvme1n1 rw\n\
                 22 1 0:21 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].devno, "259:1");
        assert_eq!(m[0].path, "/mnt/with space");
        assert_eq!(m[0].fstype, "ext4");
    }

    #[test]
    fn swaps() {
        let t = "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme2n1p2  partition\t1\t0\t-2\n/swapfile file 1 0 -3\n";
        assert_eq!(parse_swaps(t), ["nvme2n1p2"]);
    }
}
