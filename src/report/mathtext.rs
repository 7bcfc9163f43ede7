//! The paper's words as a reader sees them: the quotes in `stages/claims.yaml` are transcribed
//! with the paper's TeX (`$L_{\text{bce-nu}}$`, `\mathcal{A}_{Uni}` written without dollars,
//! `10^{-3}`) and Markdown emphasis (`**…**`, `*…*`). Printed as they are, a reader sees raw
//! markup. This module parses that small subset offline (no MathJax, no network) into inline
//! nodes and renders them for each output:
//!
//! * HTML: italic variables, `<sub>`/`<sup>`, Unicode symbols (𝒜, γ, ∈), `<strong>`/`<em>`;
//! * LaTeX: the math re-emitted as math (`$\mathcal{A}_{\text{Uni}}$`), emphasis as
//!   `\textbf`/`\emph`, everything else escaped;
//! * Markdown (the README): Unicode with `<sub>`/`<sup>` (GitHub renders them) and Markdown
//!   emphasis.
//!
//! A quote is math where it is between `$…$`, and outside dollars a whitespace-delimited word
//! is math when it has a TeX command (`\name`) or a braced sub- or superscript (`_{`, `^{`).

/// One piece of math.
#[derive(Clone, Debug, PartialEq)]
enum M {
    /// A single-letter variable (italic).
    Var(char),
    /// Upright text: digits, operators, `\text{…}` content, symbols (γ, ∈).
    Plain(String),
    /// A calligraphic capital (`\mathcal{A}`).
    Cal(char),
    /// A subscript and a superscript, as upright text.
    Sub(String),
    Sup(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Math(Vec<M>),
    Strong(Vec<Node>),
    Em(Vec<Node>),
}

/// Greek letters and symbols the quotes use, by TeX name: (Unicode, TeX to re-emit).
fn symbol(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "gamma" => ("γ", r"\gamma"),
        "alpha" => ("α", r"\alpha"),
        "beta" => ("β", r"\beta"),
        "tau" => ("τ", r"\tau"),
        "sigma" => ("σ", r"\sigma"),
        "in" => ("∈", r"\in"),
        "le" | "leq" => ("≤", r"\le"),
        "ge" | "geq" => ("≥", r"\ge"),
        "times" => ("×", r"\times"),
        "cdot" => ("·", r"\cdot"),
        "pm" => ("±", r"\pm"),
        "infty" => ("∞", r"\infty"),
        "%" => ("%", r"\%"),
        "," | ";" | " " => (" ", r"\,"),
        _ => return None,
    })
}

/// Mathematical script capitals (U+1D49C …), with the letters Unicode keeps elsewhere.
fn script(c: char) -> char {
    match c {
        'B' => 'ℬ',
        'E' => 'ℰ',
        'F' => 'ℱ',
        'H' => 'ℋ',
        'I' => 'ℐ',
        'L' => 'ℒ',
        'M' => 'ℳ',
        'R' => 'ℛ',
        'A'..='Z' => char::from_u32(0x1D49C + (c as u32 - 'A' as u32)).unwrap_or(c),
        _ => c,
    }
}

/// A braced group `{…}` at `s[i..]` (nesting counted): its content and the index after it.
fn group(s: &[char], i: usize) -> Option<(String, usize)> {
    if s.get(i) != Some(&'{') {
        return None;
    }
    let mut depth = 0;
    for (j, &c) in s.iter().enumerate().skip(i) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((s[i + 1..j].iter().collect(), j + 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// The text of a sub- or superscript: `\text{x}`/`\mathrm{x}` unwrapped, commands as symbols.
fn script_text(s: &str) -> String {
    let mut out = String::new();
    for m in parse_math(s) {
        match m {
            M::Var(c) | M::Cal(c) => out.push(c),
            M::Plain(p) => out.push_str(&p),
            M::Sub(x) | M::Sup(x) => out.push_str(&x),
        }
    }
    out
}

fn parse_math(s: &str) -> Vec<M> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' => {
                // A command: letters, or one non-letter (`\%`, `\,`).
                let mut j = i + 1;
                while j < c.len() && c[j].is_ascii_alphabetic() {
                    j += 1;
                }
                if j == i + 1 && j < c.len() {
                    j += 1;
                }
                let name: String = c[i + 1..j].iter().collect();
                match name.as_str() {
                    "mathcal" | "mathscr" => match group(&c, j) {
                        Some((g, k)) => {
                            for ch in g.chars() {
                                out.push(M::Cal(ch));
                            }
                            i = k;
                        }
                        None => i = j,
                    },
                    "text" | "mathrm" | "textrm" | "operatorname" => match group(&c, j) {
                        Some((g, k)) => {
                            out.push(M::Plain(g));
                            i = k;
                        }
                        None => i = j,
                    },
                    _ => {
                        match symbol(&name) {
                            Some((u, _)) => out.push(M::Plain(u.to_string())),
                            None => out.push(M::Plain(name)),
                        }
                        i = j;
                    }
                }
            }
            ch @ ('_' | '^') => {
                let (text, k) = match group(&c, i + 1) {
                    Some((g, k)) => (script_text(&g), k),
                    None => (
                        c.get(i + 1).map(|x| x.to_string()).unwrap_or_default(),
                        i + 2,
                    ),
                };
                out.push(if ch == '_' {
                    M::Sub(text)
                } else {
                    M::Sup(text)
                });
                i = k.min(c.len());
            }
            ch if ch.is_alphabetic() => {
                out.push(M::Var(ch));
                i += 1;
            }
            '{' | '}' => i += 1,
            ch => {
                match out.last_mut() {
                    Some(M::Plain(p)) if !p.starts_with(char::is_alphabetic) => p.push(ch),
                    _ => out.push(M::Plain(ch.to_string())),
                }
                i += 1;
            }
        }
    }
    out
}

/// Is this whitespace-free word TeX written without dollars?
fn bare_math(word: &str) -> bool {
    word.contains('\\') || word.contains("_{") || word.contains("^{")
}

/// Plain text (no emphasis) into text and math nodes.
fn parse_text(s: &str, out: &mut Vec<Node>) {
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Node>| {
        if !text.is_empty() {
            out.push(Node::Text(std::mem::take(text)));
        }
    };
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('$')
            && let Some(end) = after.find('$')
        {
            flush(&mut text, out);
            out.push(Node::Math(parse_math(&after[..end])));
            rest = &after[end + 1..];
            continue;
        }
        // One word (up to whitespace or a dollar) or one whitespace/dollar character.
        let end = rest
            .find(|ch: char| ch.is_whitespace() || ch == '$')
            .unwrap_or(rest.len());
        if end == 0 {
            let ch = rest.chars().next().unwrap_or(' ');
            text.push(ch);
            rest = &rest[ch.len_utf8()..];
            continue;
        }
        let word = &rest[..end];
        if bare_math(word) {
            // Trailing punctuation stays text.
            let core = word.trim_end_matches([',', '.', ';', ':', ')']);
            flush(&mut text, out);
            out.push(Node::Math(parse_math(core)));
            text.push_str(&word[core.len()..]);
        } else {
            text.push_str(word);
        }
        rest = &rest[end..];
    }
    flush(&mut text, out);
}

/// A quote into nodes: `**…**` strong, `*…*` emphasis (opening `*` before a non-space, closing
/// after one), the rest text and math.
fn parse(s: &str) -> Vec<Node> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = s;
    'outer: while let Some(ch) = rest.chars().next() {
        for (mark, strong) in [("**", true), ("*", false)] {
            if let Some(after) = rest.strip_prefix(mark)
                && after.starts_with(|c: char| !c.is_whitespace() && c != '*')
                && let Some(end) = after.find(mark)
                && !after[..end].ends_with(char::is_whitespace)
            {
                parse_text(&std::mem::take(&mut plain), &mut out);
                let inner = parse(&after[..end]);
                out.push(if strong {
                    Node::Strong(inner)
                } else {
                    Node::Em(inner)
                });
                rest = &after[end + mark.len()..];
                continue 'outer;
            }
        }
        plain.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    parse_text(&plain, &mut out);
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn math_unicode(ms: &[M], italic: bool, esc: fn(&str) -> String) -> String {
    let mut o = String::new();
    for m in ms {
        match m {
            M::Var(c) if italic => o.push_str(&format!("<i>{}</i>", esc(&c.to_string()))),
            M::Var(c) => o.push(*c),
            M::Cal(c) => o.push(script(*c)),
            M::Plain(p) => o.push_str(&esc(p)),
            M::Sub(x) => o.push_str(&format!("<sub>{}</sub>", esc(x))),
            M::Sup(x) => o.push_str(&format!("<sup>{}</sup>", esc(&x.replace('-', "−")))),
        }
    }
    o
}

fn math_tex(ms: &[M]) -> String {
    let mut o = String::from("$");
    let text = |x: &str| {
        if x.chars().all(|c| c.is_ascii_digit() || "+-.".contains(c)) {
            x.to_string()
        } else {
            format!(r"\text{{{}}}", super::filters::tex_escape(x))
        }
    };
    for m in ms {
        match m {
            M::Var(c) => o.push(*c),
            M::Cal(c) => o.push_str(&format!(r"\mathcal{{{c}}}")),
            M::Plain(p) => {
                for ch in p.chars() {
                    match ch {
                        '%' => o.push_str(r"\%"),
                        '#' | '&' | '$' | '_' => {
                            o.push('\\');
                            o.push(ch);
                        }
                        c if c.is_ascii() => o.push(c),
                        c => {
                            let name = [
                                "gamma", "alpha", "beta", "tau", "sigma", "in", "le", "ge",
                                "times", "cdot", "pm", "infty",
                            ]
                            .into_iter()
                            .find_map(|n| {
                                symbol(n).filter(|(u, _)| u.starts_with(c)).map(|(_, t)| t)
                            });
                            match name {
                                Some(t) => {
                                    o.push_str(t);
                                    o.push(' ');
                                }
                                None => o.push_str(&format!(
                                    r"\text{{{}}}",
                                    super::filters::tex_escape(&c.to_string())
                                )),
                            }
                        }
                    }
                }
            }
            M::Sub(x) => o.push_str(&format!("_{{{}}}", text(x))),
            M::Sup(x) => o.push_str(&format!("^{{{}}}", text(x))),
        }
    }
    o.push('$');
    o
}

fn render(nodes: &[Node], target: Target) -> String {
    let mut o = String::new();
    for n in nodes {
        match (n, target) {
            (Node::Text(t), Target::Html) => o.push_str(&html_escape(t)),
            (Node::Text(t), Target::Tex) => o.push_str(&super::filters::tex_escape(t)),
            (Node::Text(t), Target::Md) => o.push_str(&super::filters::md_escape(t)),
            (Node::Math(m), Target::Html) => {
                o.push_str(r#"<span class="math">"#);
                o.push_str(&math_unicode(m, true, html_escape));
                o.push_str("</span>");
            }
            (Node::Math(m), Target::Tex) => o.push_str(&math_tex(m)),
            (Node::Math(m), Target::Md) => o.push_str(&math_unicode(m, false, md_math_escape)),
            (Node::Strong(x), Target::Html) => {
                o.push_str(&format!("<strong>{}</strong>", render(x, target)))
            }
            (Node::Strong(x), Target::Tex) => {
                o.push_str(&format!(r"\textbf{{{}}}", render(x, target)))
            }
            (Node::Strong(x), Target::Md) => o.push_str(&format!("**{}**", render(x, target))),
            (Node::Em(x), Target::Html) => o.push_str(&format!("<em>{}</em>", render(x, target))),
            (Node::Em(x), Target::Tex) => o.push_str(&format!(r"\emph{{{}}}", render(x, target))),
            (Node::Em(x), Target::Md) => o.push_str(&format!("*{}*", render(x, target))),
        }
    }
    o
}

/// Inside math in Markdown: only what would break the table or read as markup is escaped.
fn md_math_escape(s: &str) -> String {
    super::filters::md_escape(s)
}

#[derive(Clone, Copy, Debug)]
pub enum Target {
    Html,
    Tex,
    Md,
}

/// A quote rendered for `target` (HTML: safe to insert unescaped; TeX: text mode).
pub fn quote(s: &str, target: Target) -> String {
    render(&parse(s), target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tex_math_in_quotes_is_rendered_not_printed() {
        let q = r"the accuracies \mathcal{A}_{Uni} and \mathcal{A}_{CW} , with $L_{\text{bce-nu}}$ at $1/N = 0.1\%$ and L_{bce-nu} of 10^{-3} , $\gamma \in [32, 192]$";
        let h = quote(q, Target::Html);
        assert!(
            h.contains(r#"<span class="math">𝒜<sub>Uni</sub></span> and"#),
            "{h}"
        );
        assert!(h.contains("<i>L</i><sub>bce-nu</sub>"), "{h}");
        assert!(h.contains("0.1%"), "{h}");
        assert!(h.contains("10<sup>−3</sup>"), "{h}");
        assert!(
            h.contains("γ ∈ [32, 192]") || h.contains("γ") && h.contains("∈"),
            "{h}"
        );
        for raw in ["\\mathcal", "\\text", "$", "_{", "^{"] {
            assert!(!h.contains(raw), "{raw} left in {h}");
        }
        let t = quote(q, Target::Tex);
        assert!(t.contains(r"$\mathcal{A}_{\text{Uni}}$ and"), "{t}");
        assert!(t.contains(r"$L_{\text{bce-nu}}$"), "{t}");
        assert!(t.contains(r"$10^{-3}$"), "{t}");
        assert!(t.contains(r"\gamma") && t.contains(r"\in"), "{t}");
        assert!(t.contains(r"0.1\%$"), "{t}");
        assert!(!t.contains("textbackslash"), "{t}");
        let m = quote(q, Target::Md);
        assert!(m.contains("𝒜<sub>Uni</sub>"), "{m}");
        assert!(m.contains("L<sub>bce-nu</sub>"), "{m}");
        assert!(!m.contains("mathcal") && !m.contains('$'), "{m}");
    }

    #[test]
    fn markdown_emphasis_is_rendered() {
        let q = "When using **the normalized BCE losses**, *the BCE loss indeed outperforms*; 2 * 3 stays.";
        let h = quote(q, Target::Html);
        assert!(
            h.contains("<strong>the normalized BCE losses</strong>,"),
            "{h}"
        );
        assert!(
            h.contains("<em>the BCE loss indeed outperforms</em>;"),
            "{h}"
        );
        assert!(h.contains("2 * 3 stays"), "{h}");
        let t = quote(q, Target::Tex);
        assert!(t.contains(r"\textbf{the normalized BCE losses},"), "{t}");
        assert!(t.contains(r"\emph{the BCE loss indeed outperforms}"), "{t}");
        let m = quote(q, Target::Md);
        assert!(m.contains("**the normalized BCE losses**,"), "{m}");
        assert!(m.contains(r"2 \* 3 stays"), "{m}");
    }

    #[test]
    fn plain_text_is_only_escaped() {
        let q = "A & B < C [...] 50%";
        assert_eq!(quote(q, Target::Html), "A &amp; B &lt; C [...] 50%");
        assert_eq!(quote(q, Target::Tex), r"A \& B \textless{} C [...] 50\%");
    }
}
