//! The config file's text into a `Config`. Every error is one line that
//! names the file, the line and the key (`config bad.toml:2:
//! disks.min_disks: invalid type: ...`): serde_path_to_error follows the
//! key down through the nested tables, where toml alone gives only the line.

use std::path::Path;

use super::Config;
use crate::error::{Error, Result};

/// The examples' placeholders (cloud-init/*.yaml) start with this.
pub const PLACEHOLDER: &str = "REPLACE-WITH-";

pub fn parse(text: &str, origin: &Path) -> Result<Config> {
    let de = toml::Deserializer::parse(text).map_err(|e| message(&e, text, origin, ""))?;
    let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        message(e.inner(), text, origin, &key)
    })?;
    // It parsed as a Config, so it parses as a table.
    if let Ok(table) = text.parse::<toml::Table>() {
        placeholders(&table, "")?;
    }
    Ok(cfg)
}

/// One line: toml's message spans several lines with a caret drawing;
/// keep the one line that says what is wrong, plus where, plus the key.
fn message(e: &toml::de::Error, text: &str, origin: &Path, key: &str) -> Error {
    let line = e.span().map(|s| 1 + text[..s.start].matches('\n').count());
    let mut msg = e.message().trim().replace('\n', " ");
    if msg.starts_with("invalid type: map") && msg.contains("expected a sequence") {
        // `[bind]` where `[[bind]]` was meant (and `[unlock.tang]`).
        msg += &format!(
            "; {key} is a list: write [[{key}]] before each entry, not [{key}], \
             or {key} = [ {{ ... }} ]"
        );
    }
    let at = match line {
        Some(l) => format!("{}:{l}", origin.display()),
        None => origin.display().to_string(),
    };
    // The root's path is "."; an unknown key's is the table it is in.
    let key = if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("{key}: ")
    };
    Error::Usage(format!("config {at}: {key}{msg}"))
}

/// Refuses a value that is still an example's placeholder, naming its key
/// and what goes there instead. Walked over the whole text, so that a new
/// placeholder in an example is caught without a new check.
fn placeholders(table: &toml::Table, prefix: &str) -> Result<()> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        placeholder_value(v, &key)?;
    }
    Ok(())
}

fn placeholder_value(v: &toml::Value, key: &str) -> Result<()> {
    match v {
        toml::Value::String(s) if s.contains(PLACEHOLDER) => {
            let what = if key.ends_with(".thp") {
                "the thumbprint of the tang server's signing key (`tang-show-keys` on the server)"
            } else {
                "your own value"
            };
            Err(Error::Usage(format!(
                "config {key}: {s:?} is the example's placeholder, left in: put {what} there"
            )))
        }
        toml::Value::Table(t) => placeholders(t, key),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| placeholder_value(v, &format!("{key}[{i}]"))),
        _ => Ok(()),
    }
}
