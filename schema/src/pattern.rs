//! `pattern` as Kubernetes reads it: a Go RE2 regular expression, matched anywhere in the
//! string. The `regex` crate speaks nearly the same language; where the two differ, the
//! pattern is rewritten so that it means what Go means:
//!
//! - `\d`, `\w`, `\s` and `\b` are ASCII-only in Go (Unicode in `regex`); `\s` has no `\v`;
//! - `\<` and `\>` are escaped literals in Go (word boundaries in `regex`);
//! - `\Q...\E` quotes literally (unknown to `regex`);
//! - a `{` that does not start a repetition is a literal in Go (an error in `regex`);
//! - inside a class, `[`, `&&`, `--` and `~~` are literals in Go (nesting and set
//!   operations in `regex`).

use regex::Regex;

/// Compiles a Go pattern; the error is worded as Go's `regexp.Compile` words it.
pub(crate) fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(&translate(pattern)).map_err(|e| describe(pattern, &e))
}

fn describe(pattern: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map(|l| {
            l.trim_start()
                .trim_start_matches("error:")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid pattern").to_string());
    format!("error parsing regexp: {line}: `{pattern}`")
}

/// Rewrites a Go pattern into one the `regex` crate reads the same way.
pub(crate) fn translate(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    // Inside a bracket class: Go has no nesting, so only `[:name:]` opens anything there.
    let mut in_class = false;
    // Position just after the opening `[` (and `^`), where a `]` is a literal.
    let mut class_start = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            i += 2;
            class_start = false;
            match n {
                'd' => out.push_str(if in_class { "0-9" } else { "[0-9]" }),
                'D' => out.push_str("[^0-9]"),
                'w' => out.push_str(if in_class {
                    "0-9A-Za-z_"
                } else {
                    "[0-9A-Za-z_]"
                }),
                'W' => out.push_str("[^0-9A-Za-z_]"),
                's' => out.push_str(if in_class {
                    "\\t\\n\\f\\r "
                } else {
                    "[\\t\\n\\f\\r ]"
                }),
                'S' => out.push_str("[^\\t\\n\\f\\r ]"),
                'b' if !in_class => out.push_str("(?-u:\\b)"),
                'B' if !in_class => out.push_str("(?-u:\\B)"),
                '<' | '>' => out.push(n),
                'Q' => {
                    let mut lit = String::new();
                    while i < chars.len() {
                        if chars[i] == '\\' && i + 1 < chars.len() && chars[i + 1] == 'E' {
                            i += 2;
                            break;
                        }
                        lit.push(chars[i]);
                        i += 1;
                    }
                    if in_class {
                        for ch in lit.chars() {
                            push_class_literal(&mut out, ch);
                        }
                    } else {
                        out.push_str(&regex::escape(&lit));
                    }
                }
                _ => {
                    out.push('\\');
                    out.push(n);
                }
            }
            continue;
        }
        if in_class {
            if c == ']' && !class_start {
                in_class = false;
                out.push(']');
                i += 1;
                continue;
            }
            if c == '[' && chars.get(i + 1) == Some(&':') {
                // `[:alpha:]`: copied whole.
                if let Some(end) = find_from(&chars, i + 2, ":]") {
                    out.extend(&chars[i..end + 2]);
                    i = end + 2;
                    class_start = false;
                    continue;
                }
            }
            class_start = false;
            match c {
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                class_start = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` right after the opening is a literal in both; keep `class_start`.
                continue;
            }
            '{' => {
                if repetition_at(&chars, i) {
                    out.push('{');
                } else {
                    out.push_str("\\{");
                }
            }
            '}' => {
                // A `}` closing a repetition was copied with it below; a lone one is literal.
                out.push_str("\\}");
            }
            _ => out.push(c),
        }
        if c == '{' && repetition_at(&chars, i) {
            // Copy the rest of the repetition (`n}`, `n,}`, `n,m}`) untouched.
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '}' {
                    break;
                }
                i += 1;
            }
        }
        i += 1;
    }
    out
}

fn push_class_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || !c.is_ascii() {
        out.push(c);
    } else {
        out.push('\\');
        out.push(c);
    }
}

fn find_from(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let n: Vec<char> = needle.chars().collect();
    (from..chars.len().saturating_sub(n.len() - 1)).find(|&j| chars[j..j + n.len()] == n[..])
}

/// Whether `{` at `i` starts `{n}`, `{n,}` or `{n,m}`, as Go's parser requires.
fn repetition_at(chars: &[char], i: usize) -> bool {
    let mut j = i + 1;
    let start = j;
    while j < chars.len() && chars[j].is_ascii_digit() {
        j += 1;
    }
    if j == start || j >= chars.len() {
        return false;
    }
    if chars[j] == '}' {
        return true;
    }
    if chars[j] != ',' {
        return false;
    }
    j += 1;
    while j < chars.len() && chars[j].is_ascii_digit() {
        j += 1;
    }
    j < chars.len() && chars[j] == '}'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p).unwrap().is_match(s)
    }

    #[test]
    fn plain_patterns_match_anywhere() {
        assert!(m("^[a-z]+$", "abc"));
        assert!(!m("^[a-z]+$", "aBc"));
        assert!(m("b", "abc"));
        assert!(m("^a{2,3}$", "aaa"));
        assert!(!m("^a{2,3}$", "aaaa"));
        assert!(m("^a{2}$", "aa"));
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        assert!(m(r"^\d+$", "123"));
        assert!(!m(r"^\d+$", "١٢٣"));
        assert!(!m(r"^\w+$", "héllo"));
        assert!(m(r"^[\w.-]+$", "a.b-c_d"));
        assert!(!m(r"^\s$", "\u{b}"));
        assert!(m(r"^\s$", "\t"));
        assert!(m(r"\bfoo\b", "a foo b"));
        assert!(m(r"^\D$", "x"));
    }

    #[test]
    fn go_literals_stay_literals() {
        assert!(m(r"^a{$", "a{"));
        assert!(m(r"^{x}$", "{x}"));
        assert!(m(r"^\<a\>$", "<a>"));
        assert!(m(r"^\Q.*\E$", ".*"));
        assert!(!m(r"^\Q.*\E$", "ab"));
        assert!(m(r"^[[]$", "["));
        assert!(m(r"^[a&&b]+$", "a&b"));
        assert!(m(r"^[]a]+$", "]a"));
        assert!(m(r"^[[:alpha:]]+$", "abc"));
        assert!(m(r"^[^[:digit:]]+$", "abc"));
    }

    #[test]
    fn invalid_patterns_are_refused_with_go_wording() {
        let e = compile("(abc").unwrap_err();
        assert!(e.starts_with("error parsing regexp: "), "{e}");
        assert!(e.ends_with(": `(abc`"), "{e}");
    }
}
