//! Writing a rendered report: every file atomically (temporary file in the same directory,
//! then rename), stale figures removed, and the PDF built by `pdflatex` in a scratch
//! directory and moved into place only when it succeeded.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{PdfMode, Rendered};

pub use repro_engine::write_atomic;

/// `pdflatex` on the PATH?
pub fn pdflatex_available() -> bool {
    Command::new("pdflatex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compile `tex` in a scratch directory under `out`; returns the PDF bytes. Errors quote the
/// first LaTeX error lines of the log.
pub fn compile_pdf(tex: &str, out: &Path) -> Result<Vec<u8>> {
    let scratch = tempfile::Builder::new()
        .prefix(".pdflatex-")
        .tempdir_in(out)
        .with_context(|| format!("creating a scratch directory in {}", out.display()))?;
    std::fs::write(scratch.path().join("report.tex"), tex)?;
    // Twice: longtable settles its column widths on the second pass.
    let mut o = None;
    for _ in 0..2 {
        let run = Command::new("pdflatex")
            .args([
                "-interaction=nonstopmode",
                "-halt-on-error",
                "-no-shell-escape",
                "report.tex",
            ])
            .current_dir(scratch.path())
            // Fixed dates and trailer id make the PDF a function of the LaTeX alone.
            .env("SOURCE_DATE_EPOCH", "0")
            .env("FORCE_SOURCE_DATE", "1")
            .output()
            .context("running pdflatex")?;
        let ok = run.status.success();
        o = Some(run);
        if !ok {
            break;
        }
    }
    let o = o.expect("pdflatex ran");
    let pdf = scratch.path().join("report.pdf");
    if !o.status.success() || !pdf.is_file() {
        let log = std::fs::read_to_string(scratch.path().join("report.log"))
            .unwrap_or_else(|_| String::from_utf8_lossy(&o.stdout).into_owned());
        let errs: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with('!') || l.starts_with("l."))
            .take(10)
            .collect();
        bail!(
            "pdflatex failed on the report's LaTeX: {}",
            if errs.is_empty() {
                log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
            } else {
                errs.join("\n")
            }
        );
    }
    Ok(std::fs::read(pdf)?)
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub html: PathBuf,
    pub tex: PathBuf,
    pub pdf: Option<PathBuf>,
    pub svgs: Vec<PathBuf>,
}

/// Write the report into `out` (absolute).
pub fn write(r: &Rendered, out: &Path, pdf: PdfMode) -> Result<Written> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating output directory {}", out.display()))?;
    let figdir = out.join("figures");
    let mut svgs = Vec::new();
    for (id, svg) in &r.svgs {
        let p = figdir.join(format!("{id}.svg"));
        write_atomic(&p, svg.as_bytes())?;
        svgs.push(p);
    }
    // Figures of an earlier report that this one no longer has.
    if let Ok(rd) = std::fs::read_dir(&figdir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "svg") && !svgs.contains(&p) {
                std::fs::remove_file(&p)
                    .with_context(|| format!("removing stale figure {}", p.display()))?;
            }
        }
    }
    let html = out.join("report.html");
    write_atomic(&html, r.html.as_bytes())?;
    let tex = out.join("report.tex");
    write_atomic(&tex, r.tex.as_bytes())?;
    write_atomic(&out.join("summary.md"), r.summary.as_bytes())?;
    write_atomic(&out.join("summary-runs.json"), r.snapshot.as_bytes())?;
    let pdf_path = out.join("report.pdf");
    let make_pdf = match pdf {
        PdfMode::Never => false,
        PdfMode::Auto => pdflatex_available(),
        PdfMode::Always => {
            if !pdflatex_available() {
                bail!(
                    "pdf: always, but pdflatex is not on the PATH (install texlive-latex-base, texlive-latex-recommended, texlive-latex-extra, texlive-pictures, or set pdf: auto)"
                );
            }
            true
        }
    };
    let pdf_written = if make_pdf {
        let bytes = compile_pdf(&r.tex, out)?;
        write_atomic(&pdf_path, &bytes)?;
        Some(pdf_path)
    } else {
        // A PDF of an earlier report would no longer match report.tex.
        if pdf_path.exists() {
            std::fs::remove_file(&pdf_path)
                .with_context(|| format!("removing stale {}", pdf_path.display()))?;
        }
        None
    };
    Ok(Written {
        html,
        tex,
        pdf: pdf_written,
        svgs,
    })
}
