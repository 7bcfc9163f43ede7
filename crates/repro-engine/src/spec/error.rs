//! Errors about a pipeline file, rendered like a compiler's: the message, the stage,
//! `file:line:col`, and the offending line quoted with a caret under the problem.

use std::fmt;

use super::yaml::Mark;

/// One problem in a pipeline file, with where it is.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub(crate) message: String,
    pub(crate) stage: Option<String>,
    pub(crate) mark: Option<Mark>,
    /// Extra lines shown after the quote (hints, the cycle path, ...).
    pub(crate) notes: Vec<String>,
}

impl SpecError {
    pub(crate) fn plain(message: impl Into<String>) -> Self {
        SpecError {
            message: message.into(),
            stage: None,
            mark: None,
            notes: Vec::new(),
        }
    }

    pub(crate) fn at(mark: &Mark, message: impl Into<String>) -> Self {
        SpecError {
            message: message.into(),
            stage: None,
            mark: Some(mark.clone()),
            notes: Vec::new(),
        }
    }

    pub(crate) fn in_stage(mut self, stage: &str) -> Self {
        if self.stage.is_none() {
            self.stage = Some(stage.to_string());
        }
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

// Hand-written rather than annotate-snippets 0.12 (or miette), measured for issue 30: this
// renderer is ~20 lines (both Display impls ~40); annotate-snippets would add 1 crate (its
// anstyle and unicode-width are in Cargo.lock already) and its own layout, while the tests pin
// this exact `error:` / `-->` / `|` / `^` / `=` format. One span and notes is all we draw.
impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(stage) = &self.stage {
            write!(f, " (in stage '{stage}')")?;
        }
        if let Some(m) = &self.mark {
            let line = m.source.line(m.line);
            let num = m.line.to_string();
            let pad = " ".repeat(num.len());
            write!(f, "\n{pad}--> {}:{}:{}", m.path().display(), m.line, m.col)?;
            write!(
                f,
                "\n{pad} |\n{num} | {line}\n{pad} | {}^",
                " ".repeat(m.col.saturating_sub(1))
            )?;
        }
        for n in &self.notes {
            write!(f, "\n  = {n}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// All the errors found in one validation pass (nothing runs if there is any).
#[derive(Debug)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors; nothing was run", self.0.len())?;
        } else {
            write!(f, "\n\nnothing was run")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// The closest of `candidates` to `word`, if close enough to suggest ("did you mean …?").
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_close_keys_only() {
        let keys = ["deps", "outs", "params", "cmd"];
        assert_eq!(super::suggest("dep", &keys), Some("deps"));
        assert_eq!(super::suggest("out", &keys), Some("outs"));
        assert_eq!(super::suggest("zzzzzz", &keys), None);
    }
}
