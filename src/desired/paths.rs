//! Lexical path rules for files inside a stack directory: relative, no `..`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentDir,
    Empty,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Absolute => "is an absolute path: it escapes the stack directory",
            PathProblem::ParentDir => "uses `..`: it escapes the stack directory",
            PathProblem::Empty => "is empty",
        })
    }
}

/// Normalizes `./a//b/./c` to `a/b/c`; refuses absolute paths and any `..`.
pub fn normalize_rel(p: &str) -> Result<String, PathProblem> {
    if p.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathProblem::ParentDir),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(PathProblem::Empty);
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target written in `link_dir` (relative to the stack
/// directory); `None` when it leaves the stack directory.
pub fn resolve_link(link_dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link_dir.split('/').filter(|s| !s.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize_rel("./config//a/./b.conf"),
            Ok("config/a/b.conf".into())
        );
        assert_eq!(normalize_rel("/etc/x"), Err(PathProblem::Absolute));
        assert_eq!(normalize_rel("config/../../x"), Err(PathProblem::ParentDir));
        assert_eq!(normalize_rel("./"), Err(PathProblem::Empty));
    }

    #[test]
    fn links() {
        assert_eq!(
            resolve_link("config", "real.conf"),
            Some("config/real.conf".into())
        );
        assert_eq!(
            resolve_link("config", "../compose.yaml"),
            Some("compose.yaml".into())
        );
        assert_eq!(resolve_link("", "../other/x"), None);
        assert_eq!(resolve_link("config", "/etc/passwd"), None);
    }
}
