//! Tera filters for the report templates: number formats like the paper's and LaTeX escaping.
//!
//! HTML escaping is tera's autoescape (on for `.html` and `.svg` templates); LaTeX has no
//! autoescape, so every string from the data goes through `| tex` in the `.tex` templates.
//! Numbers stay numbers in the template context and are formatted only here, so a template
//! decides the digits (`| num(d=2)`) and the cell values in the context stay exact.

use std::collections::HashMap;

use tera::{Tera, Value};

/// Fixed-point formatting; `None` for anything that is not a finite number.
pub fn fmt_num(v: &Value, digits: usize) -> Option<String> {
    let x = v.as_f64().filter(|x| x.is_finite())?;
    let s = format!("{x:.digits$}");
    // "-0.00" reads as a sign error; the paper prints 0.00.
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        return Some(s.trim_start_matches('-').to_string());
    }
    Some(s)
}

/// Escape text for LaTeX (text mode).
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str(r"\textasciitilde{}"),
            '^' => out.push_str(r"\textasciicircum{}"),
            '<' => out.push_str(r"\textless{}"),
            '>' => out.push_str(r"\textgreater{}"),
            '|' => out.push_str(r"\textbar{}"),
            '"' => out.push_str(r"\textquotedbl{}"),
            '−' => out.push('-'),
            '±' => out.push_str(r"$\pm$"),
            'γ' => out.push_str(r"$\gamma$"),
            '×' => out.push_str(r"$\times$"),
            '≤' => out.push_str(r"$\le$"),
            '≥' => out.push_str(r"$\ge$"),
            '≈' => out.push_str(r"$\approx$"),
            '→' => out.push_str(r"$\to$"),
            '·' => out.push_str(r"$\cdot$"),
            '√' => out.push_str(r"$\surd$"),
            '⁻' => out.push_str(r"\textsuperscript{-}"),
            '²' => out.push_str(r"\textsuperscript{2}"),
            '³' => out.push_str(r"\textsuperscript{3}"),
            '₀' => out.push_str(r"$_0$"),
            '“' => out.push_str("``"),
            '”' => out.push_str("''"),
            '’' => out.push('\''),
            '—' => out.push_str("---"),
            '–' => out.push_str("--"),
            c if c.is_ascii() => out.push(c),
            // Anything else pdflatex may not know: keep the text readable.
            _ => out.push('?'),
        }
    }
    out
}

fn digits(args: &HashMap<String, Value>) -> usize {
    args.get("d").and_then(|d| d.as_u64()).unwrap_or(2) as usize
}

fn missing(args: &HashMap<String, Value>, default: &str) -> String {
    args.get("missing")
        .and_then(|m| m.as_str())
        .unwrap_or(default)
        .to_string()
}

/// `{{ x | num(d=2, missing="—") }}`: fixed digits, ASCII minus.
fn num(v: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(
        fmt_num(v, digits(args)).unwrap_or_else(|| missing(args, "—")),
    ))
}

/// `{{ x | signed(d=2) }}`: a difference, always with its sign.
fn signed(v: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(match fmt_num(v, digits(args)) {
        Some(s) if s.starts_with('-') => s,
        Some(s) => format!("+{s}"),
        None => missing(args, "—"),
    }))
}

/// `{{ x | texnum(d=3) }}`: a number in LaTeX text, with a math minus; missing as `--`.
fn texnum(v: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    let signed = args
        .get("signed")
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    Ok(Value::String(match fmt_num(v, digits(args)) {
        Some(s) => match s.strip_prefix('-') {
            Some(r) => format!("$-${r}"),
            None if signed => format!("$+${s}"),
            None => s,
        },
        None => missing(args, "--"),
    }))
}

/// `{{ s | tex }}`: escape a string (or print a number) for LaTeX.
/// Escape text for a Markdown table cell: the characters Markdown would read as markup, the
/// cell separator, HTML brackets, and line breaks.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn md(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(match v {
        Value::String(s) => md_escape(s),
        Value::Null => String::new(),
        other => md_escape(&other.to_string()),
    }))
}

fn tex(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(match v {
        Value::String(s) => tex_escape(s),
        Value::Null => String::new(),
        other => tex_escape(&other.to_string()),
    }))
}

/// `{{ x | short }}`: a number without trailing zeros (γ = 96, not 96.0); missing as "—".
fn short(v: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    Ok(Value::String(match v.as_f64().filter(|x| x.is_finite()) {
        Some(x) => {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        None => missing(args, "—"),
    }))
}

/// `{{ path | texpath }}`: escaped, with a permitted line break after each `/`, `,`, `@`, `-`
/// and `_`, for run ids and stage names in narrow table columns (a `\texttt` word does not break
/// otherwise and would print over the next column).
fn texpath(v: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = v.as_str().unwrap_or_default();
    Ok(Value::String(
        tex_escape(s)
            .replace('/', r"/\allowbreak{}")
            .replace(',', r",\allowbreak{}")
            .replace('@', r"@\allowbreak{}")
            .replace('-', r"-\allowbreak{}")
            .replace(r"\_", r"\_\allowbreak{}"),
    ))
}

/// `{{ quote | quote(to="html"|"tex"|"md") }}`: the paper's words with their TeX math and
/// Markdown emphasis rendered (see `mathtext`); HTML output is markup (use `| safe`).
fn quote(v: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    let s = v.as_str().unwrap_or_default();
    let target = match args.get("to").and_then(|t| t.as_str()) {
        Some("html") => super::mathtext::Target::Html,
        Some("tex") => super::mathtext::Target::Tex,
        Some("md") => super::mathtext::Target::Md,
        other => {
            return Err(tera::Error::msg(format!(
                "quote: `to` must be html, tex or md, got {other:?}"
            )));
        }
    };
    Ok(Value::String(super::mathtext::quote(s, target)))
}

/// Register every report filter on `tera`.
pub fn register(tera: &mut Tera) {
    tera.register_filter("num", num);
    tera.register_filter("signed", signed);
    tera.register_filter("texnum", texnum);
    tera.register_filter("tex", tex);
    tera.register_filter("short", short);
    tera.register_filter("texpath", texpath);
    tera.register_filter("md", md);
    tera.register_filter("quote", quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(d: u64) -> HashMap<String, Value> {
        HashMap::from([("d".to_string(), json!(d))])
    }

    #[test]
    fn numbers_like_the_paper() {
        assert_eq!(num(&json!(77.5), &args(2)).unwrap(), json!("77.50"));
        assert_eq!(num(&json!(-0.3934), &args(3)).unwrap(), json!("-0.393"));
        assert_eq!(num(&json!(-0.0001), &args(2)).unwrap(), json!("0.00"));
        assert_eq!(num(&Value::Null, &args(2)).unwrap(), json!("—"));
        assert_eq!(signed(&json!(0.25), &args(2)).unwrap(), json!("+0.25"));
        assert_eq!(texnum(&json!(-1.5), &args(2)).unwrap(), json!("$-$1.50"));
        assert_eq!(texnum(&Value::Null, &args(2)).unwrap(), json!("--"));
    }

    #[test]
    fn latex_escaping() {
        assert_eq!(
            tex_escape(r"a_b & 50% #1 {x} \ ~^"),
            r"a\_b \& 50\% \#1 \{x\} \textbackslash{} \textasciitilde{}\textasciicircum{}"
        );
        assert_eq!(tex_escape("runs/<x>"), r"runs/\textless{}x\textgreater{}");
        assert_eq!(
            texpath(&json!("a/b_c"), &HashMap::new()).unwrap(),
            json!(r"a/\allowbreak{}b\_\allowbreak{}c")
        );
        assert_eq!(
            texpath(&json!("finetune@fm,mlp"), &HashMap::new()).unwrap(),
            json!(r"finetune@\allowbreak{}fm,\allowbreak{}mlp")
        );
    }
}
