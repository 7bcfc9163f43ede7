//! Progress relay from a child stage to the engine's display.
//!
//! A built-in stage runs in its own process; it reports progress by printing one marker line
//! on stdout. The engine strips these lines from the log and shows them on the stage's line of
//! the progress display. Outside the engine (a kind run by hand) they are just readable lines.

use std::io::Write;

/// The prefix the engine recognises.
pub const MARKER: &str = "##repro-progress ";

/// Report progress: a short message (e.g. `epoch 3/10 batch 120/469 loss 0.412 1830 img/s`)
/// and, where known, the fraction done in [0, 1].
pub fn report(message: &str, fraction: Option<f64>) {
    let line = serde_json::json!({ "msg": message, "frac": fraction });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARKER}{line}");
    let _ = out.flush();
}

/// Parse a marker line back (engine side). Returns `None` for ordinary output.
pub fn parse(line: &str) -> Option<(String, Option<f64>)> {
    let json = line.strip_prefix(MARKER)?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let msg = v.get("msg")?.as_str()?.to_string();
    let frac = v.get("frac").and_then(|f| f.as_f64());
    Some((msg, frac))
}

#[cfg(test)]
mod tests {
    #[test]
    fn marker_round_trips() {
        let line = format!("{}{}", super::MARKER, r#"{"msg":"epoch 1/2","frac":0.5}"#);
        assert_eq!(
            super::parse(&line),
            Some(("epoch 1/2".to_string(), Some(0.5)))
        );
        assert_eq!(super::parse("plain output"), None);
    }
}
