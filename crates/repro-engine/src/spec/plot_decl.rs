//! A stage's `plots:` declarations, as the pipeline loader reads them: a leaf under spec, so
//! that the pipeline (and everything below the `repro plots` command) names nothing of the
//! plots module that draws them (`crate::plots` re-exports these names).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::yaml::Mark;

/// One entry of a stage's `plots:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlotDecl {
    /// The file, relative to the workspace (an output of the stage).
    pub path: String,
    /// The x column of a series (`None`: the row number).
    pub x: Option<String>,
    /// The y columns of a series (empty: every numeric column but x).
    pub y: Vec<String>,
    pub title: Option<String>,
    /// Where it is written, for errors about it.
    pub mark: Mark,
}

/// What a plot file holds, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlotKind {
    Csv,
    Tsv,
    Json,
    /// An image, with its media type.
    Image(&'static str),
}

/// The extensions a plot file may have (what an error about another lists).
pub(crate) const EXTENSIONS: &str =
    ".csv, .tsv, .json (series); .png, .jpg, .jpeg, .gif, .svg (images)";

impl PlotKind {
    pub(crate) fn of(path: &str) -> Result<PlotKind, String> {
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        Ok(match ext.as_str() {
            "csv" => PlotKind::Csv,
            "tsv" => PlotKind::Tsv,
            "json" => PlotKind::Json,
            "png" => PlotKind::Image("image/png"),
            "jpg" | "jpeg" => PlotKind::Image("image/jpeg"),
            "gif" => PlotKind::Image("image/gif"),
            "svg" => PlotKind::Image("image/svg+xml"),
            _ => return Err(format!("'{path}' is not a plot file ({EXTENSIONS})")),
        })
    }
}

impl PlotDecl {
    /// A `plots:` entry as interpolated: a path, or a mapping with `path` and optionally `x`,
    /// `y` (a name or a list) and `title`. The path is not normalised here.
    pub fn from_json(v: &Json, mark: &Mark) -> Result<PlotDecl, String> {
        let text = |v: &Json| -> Option<String> {
            match v {
                Json::String(s) => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let mut d = PlotDecl {
            path: String::new(),
            x: None,
            y: Vec::new(),
            title: None,
            mark: mark.clone(),
        };
        match v {
            Json::String(p) => d.path = p.clone(),
            Json::Object(m) => {
                for (k, v) in m {
                    match k.as_str() {
                        "path" => d.path = text(v).ok_or("`path:` must be a file path")?,
                        "x" => d.x = Some(text(v).ok_or("`x:` must be a column name")?),
                        "title" => d.title = Some(text(v).ok_or("`title:` must be text")?),
                        "y" => {
                            d.y = match v {
                                Json::Array(a) => a.iter().map(text).collect::<Option<_>>(),
                                one => text(one).map(|t| vec![t]),
                            }
                            .ok_or("`y:` must be a column name or a list of them")?
                        }
                        other => {
                            return Err(format!(
                                "unknown key `{other}` in a plot (path, x, y, title)"
                            ));
                        }
                    }
                }
                if d.path.is_empty() {
                    return Err("a plot needs a `path:`".into());
                }
            }
            _ => return Err("a plot is a path or a mapping with `path:`, `x:`, `y:`".into()),
        }
        let kind = PlotKind::of(&d.path)?;
        if matches!(kind, PlotKind::Image(_)) && (d.x.is_some() || !d.y.is_empty()) {
            return Err(format!("'{}' is an image: it has no x or y", d.path));
        }
        Ok(d)
    }
}
