//! The flag tables under `docs/` match the binaries: for every binary, and every subcommand a
//! binary lists, the long flags its `--help` shows are exactly the flags its tables document.
//!
//! A table belongs to a command when the line before it (blank lines aside) is a comment
//! naming the command — `<!-- flags: skiff-proxy -->`, or several for a shared table,
//! `<!-- flags: skiff server, skiff agent -->` — and a command may have several tables. In
//! each row the first cell holds the flag, `` `--flag-name` ``, maybe with its short form.
//! `--help` and `--version` are left out. Needs the binaries built (`cargo build --bins`,
//! which `scripts/test` does), and nothing running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_e2e::binary;

/// Every binary whose flags the docs describe. Each `[[bin]]` of the workspace must be here.
const BINARIES: &[&str] = &[
    "skiff",
    "skiff-apiserver",
    "skiff-scheduler",
    "skiff-kubelet",
    "skiff-controller-manager",
    "skiff-proxy",
    "skiff-dns",
    "skiff-kms",
    "skiff-csi",
    "skiff-hollow-nodes",
];

/// Flags every binary has, documented once in prose rather than in each table.
const UNIVERSAL: &[&str] = &["--help", "--version"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `[[bin]]` names in the workspace members' `Cargo.toml` files.
fn declared_binaries() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(workspace()).expect("reading the workspace") {
        let manifest = entry.expect("a workspace entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut in_bin = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if let Some(value) = line.strip_prefix("name").filter(|_| in_bin) {
                let name = value.trim_start().trim_start_matches('=').trim();
                out.insert(name.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// `cmd --help`'s text. A command is the binary and maybe a subcommand: `skiff server`.
fn help(command: &str) -> String {
    let mut words = command.split(' ');
    let bin = binary(words.next().expect("a binary")).unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(&bin)
        .args(words)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {} --help: {e}", bin.display()));
    assert!(
        out.status.success(),
        "`{command} --help` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("--help prints UTF-8")
}

/// The long flags a `--help` text lists. Clap starts a flag's line with at most six spaces
/// (`  -v, --v <V>` or `      --name <NAME>`); descriptions, which may mention other flags,
/// are indented further.
fn help_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('-') || line.len() - trimmed.len() > 6 {
            continue;
        }
        // The flag part ends where the description starts, two spaces on.
        let spec = trimmed.split("  ").next().unwrap_or("");
        for word in spec.split([' ', ',']) {
            if let Some(name) = flag_name(word) {
                if !UNIVERSAL.contains(&name.as_str()) {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// `--name` out of `--name`, `--name=VALUE` or `--name <VALUE>`'s first word.
fn flag_name(word: &str) -> Option<String> {
    let rest = word.strip_prefix("--")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

/// The subcommands a `--help` text lists under `Commands:` (without `help`).
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// One documented flag: where it is.
#[derive(Debug, Clone)]
struct Documented {
    page: String,
    line: usize,
}

/// Every command's documented flags, from every page under `docs/`; problems with the tables
/// themselves go to `problems`.
fn documented(problems: &mut Vec<String>) -> BTreeMap<String, BTreeMap<String, Documented>> {
    let dir = workspace().join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut out: BTreeMap<String, BTreeMap<String, Documented>> = BTreeMap::new();
    for path in pages {
        let page = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&path).expect("reading a docs page");
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let marker = lines[i]
                .trim()
                .strip_prefix("<!-- flags:")
                .and_then(|m| m.strip_suffix("-->"));
            i += 1;
            let Some(marker) = marker else { continue };
            let commands: Vec<String> = marker
                .split(',')
                .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|c| !c.is_empty())
                .collect();
            while i < lines.len() && lines[i].trim().is_empty() {
                i += 1;
            }
            if !lines
                .get(i)
                .is_some_and(|l| l.trim_start().starts_with('|'))
            {
                problems.push(format!(
                    "{page}:{}: a flags comment not followed by a table",
                    i + 1
                ));
                continue;
            }
            // The header row and the separator row, then one flag per row.
            let mut row = 0;
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                let line_no = i + 1;
                let first_cell = lines[i].split('|').nth(1).unwrap_or("");
                i += 1;
                row += 1;
                if row <= 2 {
                    continue;
                }
                let flags: Vec<String> = first_cell
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter_map(|code| code.starts_with("--").then(|| flag_name(code)).flatten())
                    .collect();
                if flags.is_empty() {
                    problems.push(format!(
                        "{page}:{line_no}: a flag table row whose first cell names no `--flag`"
                    ));
                }
                for command in &commands {
                    for flag in &flags {
                        let at = Documented {
                            page: page.clone(),
                            line: line_no,
                        };
                        let known = out.entry(command.clone()).or_default();
                        if let Some(first) = known.insert(flag.clone(), at) {
                            problems.push(format!(
                                "{page}:{line_no}: {command} {flag} is documented twice (also {}:{})",
                                first.page, first.line
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_binary_is_covered() {
    let declared = declared_binaries();
    assert!(
        declared.contains("skiff-apiserver"),
        "no [[bin]] found in the workspace's Cargo.toml files: {declared:?}"
    );
    let missing: Vec<String> = declared
        .into_iter()
        .filter(|b| !BINARIES.contains(&b.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "binaries with no flag check in tests/tests/docs.rs (add them to BINARIES and document \
         their flags under docs/): {}",
        missing.join(", ")
    );
}

#[test]
fn flag_tables_match_every_help() {
    let mut problems = Vec::new();
    let mut docs = documented(&mut problems);
    let mut commands: Vec<String> = Vec::new();
    for bin in BINARIES {
        let text = help(bin);
        commands.push(bin.to_string());
        commands.extend(subcommands(&text).into_iter().map(|s| format!("{bin} {s}")));
    }
    for command in &commands {
        let in_help = help_flags(&help(command));
        let in_docs = docs.remove(command).unwrap_or_default();
        if in_docs.is_empty() && !in_help.is_empty() {
            problems.push(format!(
                "{command}: no flag table documents it (a table after `<!-- flags: {command} -->` \
                 under docs/); its --help lists {}",
                in_help.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let pages: BTreeSet<&str> = in_docs.values().map(|d| d.page.as_str()).collect();
        let pages = pages.into_iter().collect::<Vec<_>>().join(", ");
        let extra: Vec<String> = in_docs
            .iter()
            .filter(|(f, _)| !in_help.contains(*f))
            .map(|(f, d)| format!("{f} ({}:{})", d.page, d.line))
            .collect();
        if !extra.is_empty() {
            problems.push(format!(
                "{command}: documented but not in `{command} --help`: {}",
                extra.join(", ")
            ));
        }
        let undocumented: Vec<&str> = in_help
            .iter()
            .filter(|f| !in_docs.contains_key(*f))
            .map(String::as_str)
            .collect();
        if !undocumented.is_empty() {
            problems.push(format!(
                "{command}: in `{command} --help` but not documented (in {pages}): {}",
                undocumented.join(", ")
            ));
        }
    }
    for (command, flags) in docs {
        let (_, at) = flags.iter().next().expect("a documented flag");
        problems.push(format!(
            "{}:{}: a flag table for `{command}`, which is no binary or subcommand here",
            at.page, at.line
        ));
    }
    assert!(
        problems.is_empty(),
        "the docs' flag tables do not match the binaries:\n  {}",
        problems.join("\n  ")
    );
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The README's and the pages' links to files of the repository, `[text](path#anchor)`, lead
/// somewhere: the file exists and, for a Markdown file, has a heading with that anchor.
#[test]
fn links_between_pages_resolve() {
    let root = workspace();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("reading docs/") {
        let path = entry.expect("a docs entry").path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(path);
        }
    }
    let mut problems = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("reading a page");
        let name = page
            .strip_prefix(&root)
            .unwrap_or(page)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for target in line.split("](").skip(1).filter_map(|t| t.split(')').next()) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                let dest = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().expect("a page's folder").join(file)
                };
                if !dest.exists() {
                    problems.push(format!("{name}:{}: {target}: no such file", n + 1));
                    continue;
                }
                if fragment.is_empty() || dest.extension().is_none_or(|x| x != "md") {
                    continue;
                }
                let headings = std::fs::read_to_string(&dest).expect("reading a linked page");
                let found = headings
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .any(|h| anchor(h.trim_start_matches('#')) == fragment);
                if !found {
                    problems.push(format!("{name}:{}: {target}: no such heading", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn help_flags_are_read_from_flag_lines_only() {
    let text = "Usage: x [OPTIONS]\n\nOptions:\n      --kubeconfig <KUBECONFIG>\n          \
                The kubeconfig (default: $KUBECONFIG)\n  -v, --v <VERBOSITY>\n          Log \
                verbosity\n      --leader-elect [<LEADER_ELECT>]  Elect a leader; see\n                 \
                                --other-flag too\n  -h, --help\n          Print help\n";
    let flags: Vec<String> = help_flags(text).into_iter().collect();
    assert_eq!(flags, ["--kubeconfig", "--leader-elect", "--v"]);
    let text = "Commands:\n  server  Run it\n  agent   Join\n  help    Print this\n\nOptions:\n";
    assert_eq!(subcommands(text), ["server", "agent"]);
}
