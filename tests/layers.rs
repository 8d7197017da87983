//! The layers of src/ (lib.rs's map), checked on the source itself: a
//! top-level module imports only modules of a lower layer, so no import
//! reaches up into the plan and no circle comes back. A failure names the
//! file and the import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules, lowest first; a module may import those before it.
/// Modules on one row are peers and import none of each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["config"],
    &["host"],
    &["volume"],
    &["keys"],
    // The node (the events watcher, status's reboot line) asks the decision
    // what the next boot does; the decision never reads the node.
    &["decision"],
    &["node"],
    &["commands"],
    &["cli"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules that `text` names through `crate::`, with the
/// `use crate::{a, b::c}` form read as a, b.
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            refs.extend(
                body.split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or("").to_string())
                    .filter(|m| !m.is_empty() && m != "self"),
            );
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::failpoint!` is a macro exported at the crate root.
            if !rest[name.len()..].starts_with('!') {
                refs.push(name);
            }
        }
    }
    refs
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let Some(from) = rank(&top) else {
            bad.push(format!(
                "src/{}: module {top} is in no layer of LAYERS",
                rel.display()
            ));
            continue;
        };
        for to in crate_refs(&text) {
            if to == top {
                continue;
            }
            match rank(&to) {
                Some(r) if r < from => {
                    edges.insert((top.clone(), to), rel.display().to_string());
                }
                Some(_) => bad.push(format!(
                    "src/{} ({top}) imports crate::{to}, which is not below it",
                    rel.display()
                )),
                None => bad.push(format!(
                    "src/{} imports crate::{to}, which is in no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The check sees the imports it is meant to see.
    assert!(
        edges.contains_key(&("commands".into(), "decision".into())),
        "{edges:?}"
    );
    assert!(
        edges.contains_key(&("volume".into(), "host".into())),
        "{edges:?}"
    );
}

#[test]
fn the_reader_finds_every_form_of_import() {
    let text = "use crate::error::Result;\nuse crate::{host, volume::md};\n\
                crate::failpoint!(\"x\");\nlet x = crate::keys::key::VolumeKey::generate(1);\n";
    assert_eq!(crate_refs(text), ["error", "host", "volume", "keys"]);
}
