//! Metrics files: the numbers of a stage's `metrics:` outputs, read from JSON, YAML, TOML,
//! CSV or TSV, the format chosen by the file's extension.
//!
//! - JSON (`.json`), YAML (`.yaml`, `.yml`), TOML (`.toml`): a mapping; every number in it is a
//!   metric named by its keys joined by dots, at any depth (`softmax.a_uni`,
//!   `eval.test.top1`). Lists, strings, booleans and nulls are not metrics and are skipped
//!   (a histogram or a per-class list stays in the file without cluttering the tables).
//! - CSV (`.csv`) and TSV (`.tsv`): a header row naming the columns, then data rows; the
//!   metrics are the numeric cells of the *last* data row, named by their column. A file with
//!   one data row is a plain record; a training log with one row per epoch gives its final
//!   epoch. Cells that are not numbers (a split's name) are skipped. Fields may be quoted
//!   with `"` (a `""` inside is one quote).
//!
//! Any other extension, a file that does not parse in its format, a document that is not a
//! mapping, or a CSV row longer than its header is an error that says why; the callers add
//! the file and the stage.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

/// The formats a metrics file may have, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricsFormat {
    Json,
    Yaml,
    Toml,
    Csv,
    Tsv,
}

/// The extensions a metrics file may have (what an error about another lists).
pub(crate) const EXTENSIONS: &str = ".json, .yaml, .yml, .toml, .csv, .tsv";

impl MetricsFormat {
    /// The format of `path`, by its extension (case-insensitive).
    pub(crate) fn of(path: &str) -> Result<MetricsFormat, String> {
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Ok(MetricsFormat::Json),
            Some("yaml" | "yml") => Ok(MetricsFormat::Yaml),
            Some("toml") => Ok(MetricsFormat::Toml),
            Some("csv") => Ok(MetricsFormat::Csv),
            Some("tsv") => Ok(MetricsFormat::Tsv),
            Some(other) => Err(format!(
                "unsupported metrics format '.{other}' (metrics files are {EXTENSIONS})"
            )),
            None => Err(format!(
                "a metrics file needs an extension that names its format ({EXTENSIONS})"
            )),
        }
    }
}

/// The numbers of a parsed document, by dotted name (see the module docs).
pub(crate) fn flatten(doc: &Json) -> BTreeMap<String, f64> {
    fn walk(prefix: &str, v: &Json, out: &mut BTreeMap<String, f64>) {
        match v {
            Json::Number(n) => {
                out.insert(prefix.to_string(), n.as_f64().unwrap_or(f64::NAN));
            }
            Json::Object(m) => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            // Lists, strings, booleans and nulls are not metrics.
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    if doc.is_object() {
        walk("", doc, &mut out);
    }
    out
}

/// The metrics of a file's text; `path` gives its format.
pub(crate) fn parse(text: &str, path: &str) -> Result<BTreeMap<String, f64>, String> {
    let doc = match MetricsFormat::of(path)? {
        MetricsFormat::Json => {
            serde_json::from_str::<Json>(text).map_err(|e| format!("invalid JSON: {e}"))?
        }
        MetricsFormat::Yaml => {
            serde_yaml_ng::from_str::<Json>(text).map_err(|e| format!("invalid YAML: {e}"))?
        }
        MetricsFormat::Toml => toml_to_json(text)?,
        MetricsFormat::Csv => return last_row(text, ','),
        MetricsFormat::Tsv => return last_row(text, '\t'),
    };
    if !doc.is_object() {
        return Err("it is not a mapping of names to numbers".into());
    }
    Ok(flatten(&doc))
}

/// A stage's metrics from one of its files: names are prefixed by the file (`path:name`)
/// when the stage has several, so two files may both have an `accuracy`.
pub(crate) fn parse_named(
    text: &str,
    path: &str,
    all: &[String],
) -> Result<BTreeMap<String, f64>, String> {
    let m = parse(text, path)?;
    if all.len() <= 1 {
        return Ok(m);
    }
    Ok(m.into_iter()
        .map(|(k, v)| (format!("{path}:{k}"), v))
        .collect())
}

/// A TOML document as JSON (dates become strings, so they are not metrics).
fn toml_to_json(text: &str) -> Result<Json, String> {
    use toml_edit::{Item, Value};
    fn value(v: &Value) -> Json {
        match v {
            Value::Integer(i) => Json::from(*i.value()),
            Value::Float(f) => serde_json::Number::from_f64(*f.value())
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::Boolean(b) => Json::Bool(*b.value()),
            Value::String(s) => Json::String(s.value().clone()),
            Value::Datetime(_) => Json::String(String::new()),
            Value::Array(a) => Json::Array(a.iter().map(value).collect()),
            Value::InlineTable(t) => {
                Json::Object(t.iter().map(|(k, v)| (k.to_string(), value(v))).collect())
            }
        }
    }
    fn item(i: &Item) -> Json {
        match i {
            Item::None => Json::Null,
            Item::Value(v) => value(v),
            Item::Table(t) => table(t),
            Item::ArrayOfTables(a) => Json::Array(a.iter().map(table).collect()),
        }
    }
    fn table(t: &toml_edit::Table) -> Json {
        Json::Object(t.iter().map(|(k, v)| (k.to_string(), item(v))).collect())
    }
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        format!(
            "invalid TOML: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    Ok(table(doc.as_table()))
}

/// A CSV/TSV text as its header and data rows (blank lines skipped); a row longer than the
/// header is an error naming its line.
pub(crate) fn table(text: &str, sep: char) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        rows.push((
            i + 1,
            split_row(line, sep).map_err(|e| format!("line {}: {e}", i + 1))?,
        ));
    }
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        return Err("it is empty (a header row and a data row are expected)".into());
    };
    let mut data = Vec::new();
    for (line, row) in rows {
        if row.len() > header.len() {
            return Err(format!(
                "line {line} has {} fields, the header {}",
                row.len(),
                header.len()
            ));
        }
        data.push(row);
    }
    Ok((header, data))
}

/// One delimited line's fields; `"…"` quotes a field (`""` is a quote inside one).
fn split_row(line: &str, sep: char) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => quoted = false,
                c => cur.push(c),
            }
        } else if c == '"' && cur.trim().is_empty() {
            cur.clear();
            quoted = true;
        } else if c == sep {
            fields.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// A cell as a number: decimal or scientific, `nan`/`inf` too; not empty text.
pub(crate) fn number(cell: &str) -> Option<f64> {
    let t = cell.trim();
    if t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// The CSV/TSV convention: the numeric cells of the last data row, by column name.
fn last_row(text: &str, sep: char) -> Result<BTreeMap<String, f64>, String> {
    let (header, data) = table(text, sep)?;
    let Some(last) = data.last() else {
        return Err("it has a header but no data row".into());
    };
    Ok(header
        .iter()
        .zip(last)
        .filter_map(|(h, c)| Some((h.trim().to_string(), number(c)?)))
        .filter(|(h, _)| !h.is_empty())
        .collect())
}

/// A metrics file of the workspace as text: `None` when there is none (see [`read_bytes`]).
pub(crate) fn read(path: &Path) -> Result<Option<String>, String> {
    match read_bytes(path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| "it is not UTF-8 text".to_string()),
    }
}

/// A metrics or plot file of the workspace: `None` when there is none. Only a regular file
/// is read: it is opened without blocking and checked on the open descriptor, so a FIFO at
/// the path is refused instead of waited on forever. The error says why, in words.
pub(crate) fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        let kind = crate::state::hashing::special_kind(&meta).unwrap_or("a directory");
        return Err(format!("it is {kind}, not a regular file"));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(m: &BTreeMap<String, f64>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn json_at_any_depth_by_dotted_names_skipping_lists_and_text() {
        let m = flatten(&json!({"acc": 0.5, "n": 3, "softmax": {"a_uni": 0.25,
            "deep": {"x": 1, "y": {"z": 2.5}}}, "hist": [1, 2], "name": "x", "ok": true}));
        assert_eq!(
            keys(&m),
            [
                "acc",
                "n",
                "softmax.a_uni",
                "softmax.deep.x",
                "softmax.deep.y.z"
            ]
        );
        assert_eq!(m["softmax.deep.y.z"], 2.5);
        let p = parse(r#"{"a": {"b": {"c": 7}}}"#, "m.json").unwrap();
        assert_eq!(p["a.b.c"], 7.0);
    }

    #[test]
    fn yaml_and_toml_give_the_same_names_as_json() {
        let y = parse(
            "acc: 0.9\neval:\n  test:\n    top1: 0.8\nhist: [1, 2]\nname: run\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(keys(&y), ["acc", "eval.test.top1"]);
        assert_eq!(y["eval.test.top1"], 0.8);
        assert_eq!(parse("acc: 1\n", "M.YML").unwrap()["acc"], 1.0);
        let t = parse(
            "acc = 0.9\nwhen = 2024-01-01\n[eval.test]\ntop1 = 0.8\nn = 12\nhist = [1, 2]\n",
            "m.toml",
        )
        .unwrap();
        assert_eq!(keys(&t), ["acc", "eval.test.n", "eval.test.top1"]);
        assert_eq!(t["eval.test.n"], 12.0);
    }

    #[test]
    fn csv_and_tsv_take_the_last_row_by_column() {
        let c = parse(
            "epoch,split,loss,acc\n1,train,0.9,0.5\n2,train,0.4,\"0.75\"\n\n",
            "log.csv",
        )
        .unwrap();
        assert_eq!(keys(&c), ["acc", "epoch", "loss"]);
        assert_eq!((c["epoch"], c["loss"], c["acc"]), (2.0, 0.4, 0.75));
        let t = parse("acc\tf1\r\n0.5\t1e-2\r\n", "m.tsv").unwrap();
        assert_eq!((t["acc"], t["f1"]), (0.5, 0.01));
        // A short row: the missing columns are not metrics.
        assert_eq!(keys(&parse("a,b\n1\n", "m.csv").unwrap()), ["a"]);
    }

    #[test]
    fn several_files_prefix_names_by_file() {
        let all = ["a.json".to_string(), "b.csv".to_string()];
        let m = parse_named("x\n1\n", "b.csv", &all).unwrap();
        assert_eq!(keys(&m), ["b.csv:x"]);
        assert_eq!(
            keys(&parse_named("x\n1\n", "b.csv", &all[1..]).unwrap()),
            ["x"]
        );
    }

    #[test]
    fn each_error_says_why() {
        let err = |text: &str, path: &str| parse(text, path).unwrap_err();
        assert!(err("{}", "m.txt").contains("unsupported metrics format '.txt'"));
        assert!(err("{}", "metrics").contains("needs an extension"));
        assert!(err("{", "m.json").starts_with("invalid JSON"));
        assert!(err("[1, 2]", "m.json").contains("not a mapping"));
        assert!(err("a: [", "m.yaml").starts_with("invalid YAML"));
        assert!(err("- 1\n", "m.yml").contains("not a mapping"));
        assert!(err("a = ", "m.toml").starts_with("invalid TOML"));
        assert!(err("", "m.csv").contains("empty"));
        assert!(err("a,b\n", "m.csv").contains("no data row"));
        assert!(err("a\n1,2\n", "m.csv").contains("line 2 has 2 fields"));
        assert!(err("a\n\"1\n", "m.tsv").contains("line 2: a quoted field"));
    }

    #[test]
    fn read_refuses_a_fifo_and_a_directory_and_misses_quietly() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(&d.path().join("none.json")), Ok(None));
        assert!(read(d.path()).unwrap_err().contains("not a regular file"));
        let fifo = d.path().join("f.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read(&fifo).unwrap_err().contains("not a regular file"));
        std::fs::write(d.path().join("m.json"), "{}").unwrap();
        assert_eq!(read(&d.path().join("m.json")), Ok(Some("{}".into())));
    }
}
