//! Shell quoting of values spliced into `cmd:`.
//!
//! A `cmd:` is shell code written by the pipeline author, but the values spliced into it come
//! from vars files, profiles and `--set`, which the engine does not trust to be code. So a
//! `${x}` in `cmd:` stands for exactly one piece of literal text: the engine follows the
//! shell's quoting state through the author's text ([`ShellLexer`]) and writes the value so
//! that sh reads it back unchanged in that spot — single-quoted outside quotes (left bare when
//! it is a plain word such as `0.1` or `cnn`, so logs stay readable), escaped inside `"…"`,
//! with `'\''` inside `'…'`. `${raw:x}` splices the text as code, for an author who means it.

/// One level of shell quoting the lexer is inside.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Frame {
    /// Outside any quotes (the top level).
    Plain,
    /// `'…'`: nothing is special but the closing quote.
    Single,
    /// `"…"`: `\`, `"`, `$` and backquote stay special.
    Double,
    /// `$(…)`, with the number of unclosed `(` inside it; quoting starts afresh.
    Subst(u32),
    /// `` `…` ``: quoting starts afresh, and the text is unescaped once before it runs.
    Backquote,
}

/// Follows where a command's text is, quoting-wise, as it is written piece by piece.
#[derive(Debug)]
pub(super) struct ShellLexer {
    stack: Vec<Frame>,
    /// The last character was an unquoted `\`: the next one is literal.
    escaped: bool,
    /// The last character was `$` (so `(` opens a command substitution).
    dollar: bool,
}

impl Default for ShellLexer {
    fn default() -> Self {
        ShellLexer {
            stack: vec![Frame::Plain],
            escaped: false,
            dollar: false,
        }
    }
}

impl ShellLexer {
    fn top(&self) -> Frame {
        *self.stack.last().unwrap_or(&Frame::Plain)
    }

    /// Advance over literal command text written by the author.
    pub(super) fn feed(&mut self, text: &str) {
        for c in text.chars() {
            let after_dollar = std::mem::take(&mut self.dollar);
            if std::mem::take(&mut self.escaped) {
                continue;
            }
            let top = self.top();
            if top == Frame::Single {
                if c == '\'' {
                    self.stack.pop();
                }
                continue;
            }
            match c {
                '\\' => self.escaped = true,
                '$' => self.dollar = true,
                '(' if after_dollar => self.stack.push(Frame::Subst(0)),
                '`' if top == Frame::Backquote => {
                    self.stack.pop();
                }
                '`' => self.stack.push(Frame::Backquote),
                '"' if top == Frame::Double => {
                    self.stack.pop();
                }
                _ if top == Frame::Double => {}
                '"' => self.stack.push(Frame::Double),
                '\'' => self.stack.push(Frame::Single),
                '(' => {
                    if let Some(Frame::Subst(n)) = self.stack.last_mut() {
                        *n += 1;
                    }
                }
                ')' => match self.stack.last_mut() {
                    Some(Frame::Subst(0)) => {
                        self.stack.pop();
                    }
                    Some(Frame::Subst(n)) => *n -= 1,
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// `value` written so that the shell reads it back as exactly that text at this point,
    /// or why it cannot be.
    pub(super) fn quote(&self, value: &str) -> Result<String, &'static str> {
        if self.escaped {
            return Err(
                "a `\\` right before `${…}` would escape the value's first character; \
                        remove it (write `$${` for a literal `${`)",
            );
        }
        if self.stack.contains(&Frame::Backquote) {
            // How `\"` is unescaped inside "`…`" differs between shells.
            return Err("a value cannot be spliced inside backquotes `…`; use $( … ) instead");
        }
        Ok(match self.top() {
            Frame::Single => value.replace('\'', r"'\''"),
            Frame::Double => escape(value, &['\\', '"', '$', '`']),
            Frame::Plain | Frame::Subst(_) | Frame::Backquote => word(value),
        })
    }
}

/// `value` as one shell word: bare when it is made only of characters no shell treats
/// specially (numbers, names, paths, `-`/`.`/`,` lists), otherwise single-quoted.
pub(super) fn word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./:,+@%".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Render `before{value}after` and let a real sh print, one per line, the words it sees.
    fn sh_words(before: &str, value: &str, after: &str) -> String {
        let mut lx = ShellLexer::default();
        lx.feed(before);
        let text = format!("{before}{}{after}", lx.quote(value).unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for w in {text}; do printf '%s|' \"$w\"; done"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{text}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    const NASTY: &str = "x; touch pwned; echo $(id) `id` $HOME 'a' \"b\" \\ * ~ #c\nnext";

    #[test]
    fn plain_words_stay_bare_and_others_are_quoted() {
        for v in [
            "0.1",
            "cnn",
            "bce-nu",
            "data/raw/cub",
            "1e-3",
            "a,b",
            "x@y:z",
            "café",
        ] {
            assert_eq!(word(v), v);
        }
        assert_eq!(word(""), "''");
        assert_eq!(word("a b"), "'a b'");
        assert_eq!(word("it's"), r"'it'\''s'");
        assert_eq!(word("~"), "'~'");
        assert_eq!(word("a=b"), "'a=b'");
    }

    #[test]
    fn a_value_is_one_literal_word_in_every_context() {
        // (text before, text after, the word sh sees with V standing for the value)
        let cases = [
            ("", "", "V"),
            ("pre", "post", "preVpost"),
            ("\"", "\"", "V"),
            ("\"pre ", " post\"", "pre V post"),
            ("'pre ", " post'", "pre V post"),
            ("\"$(printf %s \"", "\")\"", "V"),
            ("\"$(printf %s ", ")\"", "V"),
            ("\"$(printf %s '", "')\"", "V"),
            ("$((1+1))\"$( (printf %s ", ") )\"", "2V"),
        ];
        for (before, after, want) in cases {
            assert_eq!(
                sh_words(before, NASTY, after),
                format!("{}|", want.replace('V', NASTY)),
                "{before}…{after}"
            );
        }
    }

    #[test]
    fn backquotes_and_a_trailing_backslash_are_refused() {
        let mut lx = ShellLexer::default();
        lx.feed("echo \"`printf %s ");
        assert!(lx.quote("x").is_err());
        let mut lx = ShellLexer::default();
        lx.feed("echo `date` \\");
        assert!(lx.quote("x").is_err());
        lx.feed("x ");
        assert_eq!(lx.quote("x y").unwrap(), "'x y'");
    }

    #[test]
    fn lexer_tracks_nesting() {
        let mut lx = ShellLexer::default();
        lx.feed("echo \"$(cat 'f(1)' | (grep x)) ");
        assert_eq!(lx.top(), Frame::Double);
        lx.feed("\" 'it''s' \\' ");
        assert_eq!(lx.top(), Frame::Plain);
        lx.feed("$(echo (");
        assert_eq!(lx.top(), Frame::Subst(1));
    }
}
