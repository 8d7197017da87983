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

/// Lines of code in `text` before its inline tests (`#[cfg(test)]` at the
/// start of a line), blank lines and comments not counted.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with("//")
        })
        .collect()
}

/// Each `fn` of `text` before its inline tests, with its length in lines:
/// from its signature to the closing brace at its own indentation, as
/// rustfmt writes it.
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = &l[..l.len() - t.len()];
        let sig = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
            "pub const fn ",
        ]
        .iter()
        .find_map(|p| t.strip_prefix(p));
        let Some(sig) = sig else { continue };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let end = format!("{indent}}}");
        if let Some(n) = lines[i + 1..].iter().position(|l| *l == end) {
            out.push((name, n + 2));
        }
    }
    out
}

/// The decision and the rest read as what they do: no file of src/ over
/// 800 lines of code before its inline tests, no function over 100 lines
/// (issue 25). A failure names the file and the function.
#[test]
fn no_file_or_function_too_long_to_read() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        let n = code_lines(&text).len();
        if n > 800 {
            long.push(format!("src/{rel}: {n} lines of code before its tests"));
        }
        for (name, n) in functions(&text) {
            if n > 100 {
                long.push(format!("src/{rel}: fn {name} is {n} lines"));
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_length_reader_measures_functions() {
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub fn b(&self) {\n        if x {\n        }\n    }\n}\n#[cfg(test)]\nfn c() {\n}\n";
    assert_eq!(
        functions(text),
        vec![("a".to_string(), 3), ("b".to_string(), 4)]
    );
    assert_eq!(code_lines(text).len(), 9);
}
