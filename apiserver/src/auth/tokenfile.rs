//! Static bearer tokens from a kube-apiserver `--token-auth-file` (CSV lines
//! `token,user,uid,"group1,group2"`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{TokenAuthenticator, UserInfo};

/// The tokens of one file.
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    tokens: HashMap<String, UserInfo>,
}

/// A problem with the token file.
#[derive(Debug, thiserror::Error)]
#[error("token auth file {path}, line {line}: {why}")]
pub struct TokenFileError {
    path: String,
    line: usize,
    why: String,
}

impl TokenFile {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        let err = |line, why: String| TokenFileError {
            path: path.display().to_string(),
            line,
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err(err(n + 1, "want at least token,user,uid".into()));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                UserInfo {
                    name: fields[1].clone(),
                    uid: fields[2].clone(),
                    groups,
                    extra: BTreeMap::new(),
                },
            );
        }
        Ok(TokenFile { tokens })
    }
}

impl TokenAuthenticator for TokenFile {
    fn authenticate(&self, token: &str, _audiences: Option<&[String]>) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}
