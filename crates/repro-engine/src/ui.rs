//! Terminal conventions shared by every command: how much to say (`-q`, `-v`) and whether to
//! colour it (`--color`, `NO_COLOR`).
//!
//! Set once from the command line before anything prints, read everywhere through these small
//! functions, so that modules that print (the progress display, `status`, the executors'
//! output relay) need no extra parameters. Verbose mode relays each stage's output lines to the
//! terminal, prefixed by the stage's name, through the progress display when one is active (so
//! lines do not tear the bars); the stage's log is written either way.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How much a command prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Errors and failures only.
    Quiet,
    /// Also what ran and the summary.
    Normal,
    /// Also every stage's output, prefixed by its name.
    Verbose,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

static LEVEL: AtomicU8 = AtomicU8::new(1);
static COLOR: AtomicBool = AtomicBool::new(false);
/// The active progress display, so relayed stage output is printed above its bars.
static DISPLAY: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Apply the command line's choices; call once at start-up.
pub fn configure(level: Level, color: ColorChoice) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let on = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => auto_color(
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
            std::io::stdout().is_terminal(),
        ),
    };
    COLOR.store(on, Ordering::Relaxed);
    // The progress bars' styles colour through `console`.
    console::set_colors_enabled(on);
    console::set_colors_enabled_stderr(on);
}

/// `--color auto`: a terminal that is not `dumb`, and `NO_COLOR` unset or empty
/// (https://no-color.org).
fn auto_color(
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
    tty: bool,
) -> bool {
    no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb") && tty
}

pub(crate) fn quiet() -> bool {
    LEVEL.load(Ordering::Relaxed) == Level::Quiet as u8
}

pub(crate) fn verbose() -> bool {
    LEVEL.load(Ordering::Relaxed) == Level::Verbose as u8
}

pub(crate) fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

/// Colours used in output.
#[derive(Clone, Copy)]
pub(crate) enum Paint {
    Red,
    Green,
    Yellow,
    Dim,
}

/// `text` in a colour when colour is on, unchanged otherwise.
pub(crate) fn paint(text: &str, p: Paint) -> String {
    if !color() {
        return text.to_string();
    }
    let code = match p {
        Paint::Red => "31",
        Paint::Green => "32",
        Paint::Yellow => "33",
        Paint::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The progress display registers itself while it is drawn (and `None` when done).
pub(crate) fn set_display(d: Option<indicatif::MultiProgress>) {
    *DISPLAY.lock().unwrap_or_else(|e| e.into_inner()) = d;
}

/// Verbose mode: one line of a stage's output, shown as `stage | line`.
pub(crate) fn stage_output(stage: &str, line: &str) {
    if !verbose() {
        return;
    }
    let text = format!("{} {line}", paint(&format!("{stage} |"), Paint::Dim));
    match &*DISPLAY.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(multi) => {
            let _ = multi.println(text);
        }
        None => println!("{text}"),
    }
}

/// Output format of the table commands (`compare`, `metrics`, `trace`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned plain-text columns.
    Text,
    /// A Markdown table (`--md`).
    Markdown,
    /// JSON (`--json`).
    Json,
}

/// An aligned text table, or a Markdown one.
// Hand-written rather than comfy-table or tabled, measured for issue 30: ~50 lines, Markdown
// included; comfy-table 7 without default features would add 1 crate (its unicode-width and
// unicode-segmentation are in Cargo.lock already) and draws borders we do not want. Widths
// count chars, not display columns: a wide (CJK) cell misaligns, the one thing it would fix.
pub(crate) fn render_table(headers: &[String], rows: &[Vec<String>], fmt: Format) -> String {
    let mut s = String::new();
    if fmt == Format::Markdown {
        let esc = |c: &str| c.replace('|', "\\|");
        s.push_str(&format!(
            "| {} |\n",
            headers
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        s.push_str(&format!(
            "|{}\n",
            headers.iter().map(|_| "---|").collect::<String>()
        ));
        for r in rows {
            s.push_str(&format!(
                "| {} |\n",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        return s;
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    s.push_str(&line(headers));
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn auto_color_honours_no_color_and_dumb_terminals() {
        assert!(auto_color(None, Some(OsStr::new("xterm")), true));
        assert!(!auto_color(None, Some(OsStr::new("xterm")), false));
        assert!(!auto_color(
            Some(OsStr::new("1")),
            Some(OsStr::new("xterm")),
            true
        ));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(auto_color(Some(OsStr::new("")), None, true));
        assert!(!auto_color(None, Some(OsStr::new("dumb")), true));
    }
}
