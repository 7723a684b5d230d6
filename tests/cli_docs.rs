//! README's command table cannot drift from the CLI: every subcommand clap
//! knows has a row, every flag it takes is named in that row, every flag a
//! row names exists, and every global option is in the Global options
//! paragraph — both ways, from clap's own command tree.

use clap::CommandFactory;
use stackpin::cli::Cli;
use std::collections::{BTreeMap, BTreeSet};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// `--flags` in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let tail = &rest[i + 2..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.insert(format!("--{name}"));
        }
        rest = tail;
    }
    out
}

/// README's command rows: subcommand -> (what the first cell shows, the
/// whole row).
fn rows() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for line in readme().lines().filter(|l| l.starts_with("| `stackpin ")) {
        let first = line[1..].split(" | ").next().unwrap_or("").to_string();
        // A row may show several commands (`hold … / resume …`).
        for part in first.split("`stackpin ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.insert(name, (part.to_string(), line.to_string()));
            }
        }
    }
    out
}

fn global_flags() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

#[test]
fn every_subcommand_and_flag_is_in_the_readme_table() {
    let rows = rows();
    let mut missing = Vec::new();
    for sub in Cli::command().get_subcommands() {
        let name = sub.get_name();
        let Some((_, row)) = rows.get(name) else {
            missing.push(format!("no README row for `stackpin {name}`"));
            continue;
        };
        let named = flags(row);
        for a in sub.get_arguments() {
            if a.is_hide_set() || a.is_global_set() {
                continue;
            }
            if let Some(l) = a.get_long()
                && !named.contains(&format!("--{l}"))
            {
                missing.push(format!("`stackpin {name} --{l}` is not in its README row"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_command_and_flag_the_readme_table_shows_exists() {
    let cmd = Cli::command();
    let globals = global_flags();
    let mut unknown = Vec::new();
    for (name, (shown, _)) in rows() {
        let Some(sub) = cmd.find_subcommand(&name) else {
            unknown.push(format!(
                "README shows `stackpin {name}`, which clap does not know"
            ));
            continue;
        };
        let known: BTreeSet<String> = sub
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .chain(globals.iter().cloned())
            .chain(["--help".to_string(), "--version".to_string()])
            .collect();
        // Only the usage cell: the description may name other commands' flags.
        let usage = shown.split('`').next().unwrap_or("");
        for f in flags(usage) {
            if !known.contains(&f) {
                unknown.push(format!(
                    "README shows `stackpin {name} {f}`, which it does not take"
                ));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn the_global_options_paragraph_names_every_global_option() {
    let text = readme();
    let para = text
        .split("\n\n")
        .find(|p| p.starts_with("Global options"))
        .expect("README has a Global options paragraph");
    let named = flags(para);
    let globals = global_flags();
    let missing: Vec<_> = globals.difference(&named).collect();
    assert!(missing.is_empty(), "not in Global options: {missing:?}");
    let extra: Vec<_> = named.difference(&globals).collect();
    assert!(
        extra.is_empty(),
        "Global options names what clap does not: {extra:?}"
    );
}

/// The workflows that desired-state and application repositories copy
/// (the PR check, the promotion PR, the application's bump) download a
/// release asset by name and run `stackpin` from its root: the tag
/// workflow must build exactly that asset, with the binary at the
/// archive's root, and each pins the version this crate is.
#[test]
fn the_example_workflows_download_what_the_tag_workflow_publishes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
    let release = read(".github/workflows/release.yml");
    let asset = release
        .lines()
        .find_map(|l| l.trim().strip_prefix("ASSET: "))
        .expect("release.yml names its ASSET");
    assert!(
        release.contains("tar -czf \"$RUNNER_TEMP/$ASSET\" -C \"$out\" stackpin"),
        "release.yml must put the binary at the archive's root"
    );
    assert!(
        release.contains("tags: [\"v*\"]"),
        "release.yml runs on version tags"
    );
    for file in [
        "desired-state-example/.github/workflows/validate.yml",
        "desired-state-example/.github/workflows/promote.yml",
        "desired-state-example/.github/workflows/app-digest-bump.example.yml",
    ] {
        let w = read(file);
        assert!(
            w.contains(&format!("--pattern \"{asset}\"")),
            "{file} does not download {asset}"
        );
        assert!(
            w.contains(&format!(
                "tar -xzf \"$RUNNER_TEMP/{asset}\" -C \"$RUNNER_TEMP/bin\""
            )),
            "{file} does not unpack {asset} into bin/"
        );
        let version = w
            .lines()
            .find_map(|l| l.trim().strip_prefix("STACKPIN_VERSION: "))
            .unwrap_or_else(|| panic!("{file} names no version"));
        assert_eq!(
            version,
            format!("v{}", env!("CARGO_PKG_VERSION")),
            "{file} pins the version this crate is"
        );
    }
}

fn version(v: &str) -> (u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The declared MSRV is not below any dependency's own `rust-version`
/// (`cargo metadata` of the locked graph), and docs/testing.md names it. The build
/// with exactly that toolchain runs on GitHub (ci.yml's `msrv` job): the
/// test machines have only one toolchain.
#[test]
fn the_declared_msrv_covers_every_dependency() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = version(env!("CARGO_PKG_RUST_VERSION"));
    assert!(ours > (1, 0), "Cargo.toml declares no rust-version");
    let newer: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            (version(rv) > ours).then(|| format!("{} {} needs {rv}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "rust-version {} is below what these need: {newer:?}",
        env!("CARGO_PKG_RUST_VERSION")
    );
    let stated = format!("MSRV\n(`rust-version`, {}.{}", ours.0, ours.1);
    let testing =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/testing.md")).unwrap();
    assert!(
        testing
            .replace('\n', " ")
            .contains(&stated.replace('\n', " ")),
        "docs/testing.md does not state the MSRV as {stated:?}"
    );
}
