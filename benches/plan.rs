//! The cost of one no-op loop (issue 7): what the daemon does on every poll
//! tick when nothing changed, for 10, 100 and 500 stacks. Each size gets a
//! desired-state repository written once to a temp dir (and committed, for
//! the git read the daemon actually does); then the stages are measured
//! separately and together:
//!
//! - `load_dir`: `desired::load` of the directory (read + parse + validate);
//! - `load_git`: the same from the commit (`GitTree`, what the daemon reads);
//! - `render`: `reconcile::render` of every stack (the fingerprints);
//! - `plan`: `plan::plan` against an observed state equal to the desired one,
//!   so that every stack is `Noop`;
//! - `loop`: `load_dir` + `render` + `plan`, one whole no-op pass;
//! - `same, kept`: the daemon's pass on a commit it loaded already, every
//!   stack's render kept from the pass before (`release::cache`).
//!
//! The engine is never touched: this is the pure cost of deciding "nothing to
//! do". After criterion's report a table is printed (median per iteration and
//! allocations, counted by the global allocator below). Nothing is asserted
//! about times.
//!
//! `cargo bench --bench plan`                      full run
//! `cargo bench --bench plan -- --quick`           short run (criterion's quick mode, small table)
//! `STACKPIN_BENCH_SIZES=10,100 cargo bench ...`   other sizes

use criterion::{BenchmarkId, Criterion, Throughput};
use stackpin::desired::{self, DesiredState, DirTree, GitTree};
use stackpin::plan::{self, LocalRecord, ObservedContainer, ObservedStack, Options};
use stackpin::reconcile;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counts allocations (and bytes asked for) so the table can show them.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HOST: &str = "bench-host";

/// A deterministic fake digest for stack `i`, service `svc`.
fn digest(i: usize, svc: usize) -> String {
    format!("{:064x}", (i as u128 + 1) * 1_000_003 + svc as u128 * 7_919)
}

/// Writes a realistic repository of `n` stacks: two services each (one
/// pinned in `images:`, one pinned in compose), env, a read-only config
/// mount, http + containers smoke checks; every tenth stack depends on the
/// first (an edge proxy), a few are staging/production pairs.
fn write_repo(dir: &Path, n: usize) {
    std::fs::write(
        dir.join("stackpin.yaml"),
        "defaults: {keep_releases: 5, smoke_timeout: 60s}\n",
    )
    .unwrap();
    for i in 0..n {
        let name = format!("s{i:04}");
        let d = dir.join("stacks").join(&name);
        std::fs::create_dir_all(d.join("config")).unwrap();
        let port = 20000 + i;
        let mut extra = String::new();
        if i % 10 == 5 && n > 1 {
            extra.push_str("depends_on: [s0000]\n");
        }
        std::fs::write(
            d.join("stack.yaml"),
            format!(
                "environment: {env}\nversion: v{i}.0.1\nimages:\n  web: 127.0.0.1:5000/acme/app{i}@sha256:{web}\nenv:\n  PORT: \"{port}\"\n  DB_HOST: db-{i}\n  LOG_LEVEL: info\n{extra}keep_releases: 5\nsmoke:\n  timeout: 60s\n  checks:\n    - containers: {{}}\n    - http: {{url: \"http://127.0.0.1:{port}/health\", expect_status: 200, contains: ok}}\n",
                env = if i % 2 == 0 { "staging" } else { "production" },
                web = digest(i, 0),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("compose.yaml"),
            format!(
                "services:\n  web:\n    image: 127.0.0.1:5000/acme/app{i}\n    network_mode: host\n    restart: unless-stopped\n    environment:\n      PORT: ${{PORT}}\n      DB_HOST: ${{DB_HOST}}\n    volumes:\n      - ./config/app.conf:/etc/app/app.conf:ro\n      - data:/var/lib/app\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-qO-\", \"http://127.0.0.1:{port}/health\"]\n      interval: 10s\n  worker:\n    image: 127.0.0.1:5000/acme/worker@sha256:{worker}\n    depends_on: [web]\n    environment:\n      LOG_LEVEL: ${{LOG_LEVEL}}\nvolumes:\n  data: {{}}\n",
                worker = digest(i, 1),
            ),
        )
        .unwrap();
        let mut conf = format!("# app config of {name}\n");
        for k in 0..40 {
            conf.push_str(&format!("option_{k} = value-{i}-{k}\n"));
        }
        std::fs::write(d.join("config/app.conf"), conf).unwrap();
    }
}

/// Commits the directory so `GitTree` can read it (uses the git CLI).
fn commit_repo(dir: &Path) {
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git runs");
        assert!(st.success(), "git {args:?} failed");
    };
    let commit = |flags: &str, msg: &str| {
        git(&[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            flags,
            msg,
        ])
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    commit("-m", "bench");
    // A second commit that changes one stack: what the daemon reads after a
    // digest bump of one stack (`main~1` is the first).
    let first = std::fs::read_dir(dir.join("stacks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let spec = first.join("stack.yaml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("# bumped\n");
    std::fs::write(&spec, text).unwrap();
    commit("-am", "one stack changes");
}

/// One size's inputs, built once.
struct Fixture {
    n: usize,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    desired: DesiredState,
    fingerprints: BTreeMap<String, String>,
    observed: BTreeMap<String, ObservedStack>,
    local: BTreeMap<String, LocalRecord>,
    previous: desired::StackCache,
    /// The state as the daemon loads it (from git: each stack keyed) and
    /// the renders it kept from its previous pass.
    desired_git: DesiredState,
    renders: stackpin::release::cache::Cache,
}

fn load_dir(dir: &Path) -> DesiredState {
    desired::load(&DirTree::new(dir))
}

fn load_git(dir: &Path) -> DesiredState {
    let t = GitTree::open(dir, "main", ".").expect("the bench repository opens");
    let mut d = desired::load(&t);
    d.commit = Some(t.commit_id());
    d
}

/// What the daemon's previous load of `main~1` kept.
fn cache_of_previous(dir: &Path) -> desired::StackCache {
    let t = GitTree::open(dir, "main~1", ".").expect("the first commit opens");
    desired::load_reusing(&t, None).1
}

/// `main` read after `main~1`: one stack changed, the rest reused.
fn load_git_incremental(dir: &Path, previous: &desired::StackCache) -> DesiredState {
    let t = GitTree::open(dir, "main", ".").expect("the bench repository opens");
    let (mut d, cache) = desired::load_reusing(&t, Some(previous));
    assert_eq!(cache.read, 1, "one stack changed between the commits");
    d.commit = Some(t.commit_id());
    d
}

fn render_all(d: &DesiredState) -> BTreeMap<String, String> {
    d.stacks
        .iter()
        .map(|(name, s)| {
            let r = reconcile::render(s, d.commit.as_deref(), &stackpin::secrets::Age::default())
                .expect("renders");
            (name.clone(), r.fingerprint)
        })
        .collect()
}

/// [`render_all`] through the renders kept in `cache` (the daemon's way).
fn render_kept(
    d: &DesiredState,
    cache: &stackpin::release::cache::Cache,
) -> BTreeMap<String, String> {
    d.stacks
        .iter()
        .map(|(name, s)| {
            let r = reconcile::render_reusing(
                cache,
                s,
                d.commit.as_deref(),
                &stackpin::secrets::Age::default(),
            )
            .expect("renders");
            (name.clone(), r.fingerprint)
        })
        .collect()
}

fn plan_all(
    d: &DesiredState,
    fps: &BTreeMap<String, String>,
    observed: &BTreeMap<String, ObservedStack>,
    local: &BTreeMap<String, LocalRecord>,
) -> plan::Plan {
    plan::plan(
        d,
        fps,
        observed,
        local,
        &Options {
            host: HOST,
            ..Default::default()
        },
    )
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        write_repo(&dir, n);
        commit_repo(&dir);
        let desired = load_dir(&dir);
        let errors: Vec<_> = desired.errors().map(|f| f.to_string()).collect();
        assert!(
            errors.is_empty(),
            "the bench repository is invalid: {errors:#?}"
        );
        assert_eq!(desired.stacks.len(), n);
        let fingerprints = render_all(&desired);
        // What the host runs equals the desired state: same fingerprint, every
        // pinned service running its digest.
        let observed = desired
            .stacks
            .iter()
            .map(|(name, s)| {
                let containers = s
                    .pins
                    .iter()
                    .map(|(svc, pin)| ObservedContainer {
                        service: svc.clone(),
                        running: true,
                        images: vec![pin.pinned().unwrap_or_else(|| pin.to_string())],
                    })
                    .collect();
                let obs = ObservedStack {
                    release: Some(format!("{}__20260101T000000Z", s.version)),
                    fingerprint: Some(fingerprints[name].clone()),
                    containers,
                    // Fields added later (e.g. the release's images) do not
                    // change a no-op plan.
                    ..Default::default()
                };
                (name.clone(), obs)
            })
            .collect();
        let local = desired
            .stacks
            .keys()
            .map(|k| (k.clone(), LocalRecord::default()))
            .collect();
        let previous = cache_of_previous(&dir);
        let desired_git = load_git(&dir);
        let renders = stackpin::release::cache::Cache::default();
        let kept = render_kept(&desired_git, &renders);
        assert_eq!(kept, fingerprints, "a kept render is the render");
        assert_eq!(renders.len(), n, "every stack read from git is kept");
        let f = Fixture {
            desired_git,
            renders,
            previous,
            n,
            _tmp: tmp,
            dir,
            desired,
            fingerprints,
            observed,
            local,
        };
        // The scenario must really be the no-op loop.
        let p = plan_all(&f.desired, &f.fingerprints, &f.observed, &f.local);
        assert_eq!(p.items.len(), n);
        for it in &p.items {
            assert_eq!(it.action, plan::Action::Noop, "{}: {}", it.stack, it.reason);
        }
        assert_eq!(load_git(&f.dir).stacks.len(), n);
        f
    }

    /// One whole no-op pass: load, fingerprints, plan.
    #[inline(never)]
    fn one_loop(&self) -> usize {
        let d = load_dir(&self.dir);
        let fps = render_all(&d);
        plan_all(&d, &fps, &self.observed, &self.local).items.len()
    }

    /// The daemon's pass on a commit it has already loaded, as it runs it:
    /// the state reused and every stack's render kept from the pass before.
    #[inline(never)]
    fn same_commit_kept(&self) -> usize {
        let fps = render_kept(&self.desired_git, &self.renders);
        plan_all(&self.desired_git, &fps, &self.observed, &self.local)
            .items
            .len()
    }

    /// The daemon's pass on a commit it has already loaded: the state is
    /// reused, so only fingerprints and plan.
    #[inline(never)]
    fn same_commit_loop(&self) -> usize {
        let fps = render_all(&self.desired);
        plan_all(&self.desired, &fps, &self.observed, &self.local)
            .items
            .len()
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("STACKPIN_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![10, 100, 500])
}

fn bench(c: &mut Criterion, fixtures: &[Fixture]) {
    let mut g = c.benchmark_group("noop");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for f in fixtures {
        g.throughput(Throughput::Elements(f.n as u64));
        g.bench_with_input(BenchmarkId::new("load_dir", f.n), f, |b, f| {
            b.iter(|| black_box(load_dir(&f.dir)))
        });
        g.bench_with_input(BenchmarkId::new("load_git", f.n), f, |b, f| {
            b.iter(|| black_box(load_git(&f.dir)))
        });
        g.bench_with_input(BenchmarkId::new("load_git_one_changed", f.n), f, |b, f| {
            b.iter(|| black_box(load_git_incremental(&f.dir, &f.previous)))
        });
        g.bench_with_input(BenchmarkId::new("render", f.n), f, |b, f| {
            b.iter(|| black_box(render_all(&f.desired)))
        });
        g.bench_with_input(BenchmarkId::new("plan", f.n), f, |b, f| {
            b.iter(|| black_box(plan_all(&f.desired, &f.fingerprints, &f.observed, &f.local)))
        });
        g.bench_with_input(BenchmarkId::new("loop", f.n), f, |b, f| {
            b.iter(|| black_box(f.one_loop()))
        });
    }
    g.finish();
}

/// Median wall time and allocations of one call of `f`: runs it up to `max`
/// times within `budget` (at least 3 times).
fn measure<T>(max: usize, budget: Duration, mut f: impl FnMut() -> T) -> (Duration, u64, u64) {
    let a0 = ALLOCS.load(Relaxed);
    let b0 = BYTES.load(Relaxed);
    black_box(f());
    let allocs = ALLOCS.load(Relaxed) - a0;
    let bytes = BYTES.load(Relaxed) - b0;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (times.len() < max && start.elapsed() < budget) {
        let t = Instant::now();
        black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], allocs, bytes)
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_count(n: u64) -> String {
    if n >= 10_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.0}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// The summary table: median per iteration of each stage, the whole loop,
/// and the allocations of one loop.
fn table(fixtures: &[Fixture], max: usize, budget: Duration) {
    println!();
    println!("no-op loop (nothing changed), median of up to {max} iterations per cell:");
    println!(
        "{:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>11} | {:>10} | {:>12} | {:>11}",
        "stacks",
        "load(dir)",
        "load(git)",
        "git, 1 chg",
        "render",
        "plan",
        "sum",
        "loop",
        "loop allocs",
        "loop bytes",
        "same commit",
        "same allocs"
    );
    println!("{}", "-".repeat(152));
    for f in fixtures {
        let (load, _, _) = measure(max, budget, || load_dir(&f.dir));
        let (git, _, _) = measure(max, budget, || load_git(&f.dir));
        let (render, _, _) = measure(max, budget, || render_all(&f.desired));
        let (plan, _, _) = measure(max, budget, || {
            plan_all(&f.desired, &f.fingerprints, &f.observed, &f.local)
        });
        let (whole, allocs, bytes) = measure(max, budget, || f.one_loop());
        let (one, _, _) = measure(max, budget, || load_git_incremental(&f.dir, &f.previous));
        let (same, same_allocs, _) = measure(max, budget, || f.same_commit_loop());
        println!(
            "{:>6} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>11} | {:>10} | {:>12} | {:>11}",
            f.n,
            fmt_dur(load),
            fmt_dur(git),
            fmt_dur(one),
            fmt_dur(render),
            fmt_dur(plan),
            fmt_dur(load + render + plan),
            fmt_dur(whole),
            fmt_count(allocs),
            format!("{} MB", (bytes as f64 / 1e6 * 10.0).round() / 10.0),
            fmt_dur(same),
            fmt_count(same_allocs),
        );
    }
    println!(
        "(sum = load(dir) + render + plan; loop = the three measured together; allocs and bytes: one loop;\n \
         git, 1 chg = the next commit, one stack changed, the rest reused from the previous load;\n \
         same commit = the daemon's pass when the commit did not change: render + plan, the state reused)"
    );
    println!();
    println!("the daemon's pass on the same commit, renders kept (issue 37):");
    println!(
        "{:>6} | {:>12} | {:>11} | {:>8}",
        "stacks", "same, kept", "allocs", "target"
    );
    println!("{}", "-".repeat(48));
    for f in fixtures {
        let (kept, allocs, _) = measure(max, budget, || f.same_commit_kept());
        let target = if f.n == 5000 { "< 50 ms" } else { "" };
        println!(
            "{:>6} | {:>12} | {:>11} | {:>8}",
            f.n,
            fmt_dur(kept),
            fmt_count(allocs),
            target
        );
    }
}

/// `STACKPIN_BENCH_CALLGRIND=N`: build the fixture of N stacks, run each
/// pass once and exit, for `valgrind --tool=callgrind --toggle-collect=…`
/// (scripts/bench.sh's `callgrind` part): instruction counts, which do not
/// move with the machine's load.
fn callgrind_mode() -> bool {
    let Some(n) = std::env::var("STACKPIN_BENCH_CALLGRIND")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return false;
    };
    let f = Fixture::new(n);
    black_box(f.one_loop());
    black_box(f.same_commit_loop());
    black_box(f.same_commit_kept());
    black_box(load_git_incremental_once(&f));
    true
}

#[inline(never)]
fn load_git_incremental_once(f: &Fixture) -> usize {
    load_git_incremental(&f.dir, &f.previous).stacks.len()
}

fn main() {
    if callgrind_mode() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    // `cargo test --benches` runs this without `--bench`: a smoke run only.
    let test_mode = !has("--bench") || has("--test");
    let quick = has("--quick");
    let listing = has("--list");
    let sizes = if test_mode { vec![10] } else { sizes() };
    let fixtures: Vec<Fixture> = if listing {
        Vec::new()
    } else {
        sizes.into_iter().map(Fixture::new).collect()
    };
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &fixtures);
    c.final_summary();
    if listing {
        return;
    }
    let (max, budget) = match (test_mode, quick) {
        (true, _) => (3, Duration::from_millis(100)),
        (false, true) => (15, Duration::from_secs(2)),
        (false, false) => (101, Duration::from_secs(10)),
    };
    table(&fixtures, max, budget);
}
