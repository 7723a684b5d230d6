//! The floor plan of `src/` (STYLE.md): each module imports only modules of
//! its own floor or below, and no two modules import each other, directly or
//! through others. Read from the source text, so a new `crate::x` use that
//! crosses a floor fails here with the file that does it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Floors, bottom first.
const FLOORS: &[&[&str]] = &[
    // the host's paths
    &["layout"],
    // the model and plain records
    &[
        "desired", "config", "dotenv", "fsutil", "fault", "history", "state", "events", "outcome",
    ],
    // leaves that know no pipeline
    &["engine", "source", "trust", "secrets", "forge"],
    // pure decisions
    &["plan", "gate", "diff", "policy"],
    // records of the host
    &[
        "release", "verified", "observed", "smoke", "rollout", "publish",
    ],
    &["host"],
    // the pipeline and what sits on it
    &[
        "reconcile",
        "backup",
        "rollback",
        "status",
        "soak",
        "promote",
        "propose",
    ],
    // the faces
    &[
        "startup",
        "daemon",
        "server",
        "control",
        "page",
        "metrics",
        "notify",
        "commit_status",
        "cli",
    ],
];

fn floor(module: &str) -> usize {
    FLOORS
        .iter()
        .position(|f| f.contains(&module))
        .unwrap_or_else(|| {
            panic!("module `{module}` is on no floor: add it to FLOORS in tests/layering.rs")
        })
}

/// `crate::x` references of every top-level module, outside tests and comments.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if !rel.ends_with(".rs") || rel.ends_with("tests.rs") {
                continue;
            }
            let module = rel
                .trim_end_matches(".rs")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for line in code.lines() {
                let line = line.split("//").next().unwrap();
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + 7..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        out.entry(module.clone())
                            .or_default()
                            .entry(name)
                            .or_insert_with(|| rel.clone());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_import_stays_on_its_floor_or_below() {
    let mut wrong = Vec::new();
    for (module, deps) in imports() {
        for (dep, file) in deps {
            if floor(&dep) > floor(&module) {
                wrong.push(format!(
                    "src/{file}: `{module}` imports `{dep}`, a floor above it"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_modules_import_each_other() {
    let g = imports();
    // Depth-first search for a cycle from every module.
    fn visit(
        g: &BTreeMap<String, BTreeMap<String, String>>,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if !done.insert(at.to_string()) {
            return None;
        }
        path.push(at.to_string());
        for dep in g.get(at).into_iter().flat_map(|d| d.keys()) {
            if let Some(c) = visit(g, dep, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(&g, m, &mut path, &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}

/// Inside `src/reconcile/`, the files' own imports (`super::x`) form no
/// circle either: the stages sit below the pipeline that runs them, and the
/// switch records below both (`mod.rs`, the facade, is left out: it
/// declares them all).
#[test]
fn the_converge_files_import_no_circle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/reconcile");
    let stems: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".rs")?.to_string();
            (stem != "mod" && stem != "tests").then_some(stem)
        })
        .collect();
    assert!(stems.contains("pipeline") && stems.contains("stage"));
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for stem in &stems {
        let text = std::fs::read_to_string(dir.join(format!("{stem}.rs"))).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (i, _) in line.match_indices("super::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if stems.contains(&name) && &name != stem {
                    g.entry(stem.clone()).or_default().insert(name);
                }
            }
        }
    }
    // A circle: a file that reaches itself through the others.
    for start in &stems {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let at = path.last().unwrap();
            for next in g.get(at).into_iter().flatten() {
                if next == start {
                    panic!(
                        "src/reconcile/ import circle: {} -> {start}",
                        path.join(" -> ")
                    );
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push(p);
                }
            }
        }
    }
}
