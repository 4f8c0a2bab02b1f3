//! The layer check: imports in `src/` only point down, and no folder has an import cycle
//! between its files. Run by `just test` and `just lint` (so by CI).
//!
//! Layers, lowest first (src/lib.rs and docs/DESIGN.md explain them):
//! util ← catalog ← engine ← mesh ← discovery ← relay ← http ← node ← cmd.
//! A file may name (`crate::x`) only its own top-level module or one listed before it. Only
//! `cmd/` and `main.rs` may use clap or print to the terminal.
//!
//! This reads the sources as text (no `mesh` import, so the binary stays small). References
//! are `crate::a::b` paths and `super::` / `self::` paths; comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[&str] = &[
    "util",
    "catalog",
    "engine",
    "mesh",
    "discovery",
    "relay",
    "http",
    "node",
    "cmd",
];

/// Where clap and printing are allowed.
const TERMINAL: &[&str] = &["cmd", "main.rs"];

/// What only the terminal layer may use: clap, print macros, the process's standard streams,
/// and indicatif's bars.
const TERMINAL_ONLY: &[&str] = &[
    "println!",
    "print!(",
    "clap::",
    "io::stdout()",
    "io::stderr()",
    "indicatif::",
];

/// A source file: its module path (`["mesh", "net", "gate"]`; `mod.rs` is its folder's module)
/// and its text.
struct Source {
    path: String,
    module: Vec<String>,
    is_mod_file: bool,
    text: String,
}

fn module_of(rel: &Path) -> (Vec<String>, bool) {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let is_mod = file == "mod.rs" || file == "lib.rs" || file == "main.rs";
    if !is_mod {
        parts.push(file.trim_end_matches(".rs").to_owned());
    }
    (parts, is_mod)
}

fn load(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path: PathBuf = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).expect("under src");
                let (module, is_mod_file) = module_of(rel);
                out.push(Source {
                    path: rel.to_string_lossy().into_owned(),
                    module,
                    is_mod_file,
                    text: std::fs::read_to_string(&path).expect("read file"),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Code lines, without `//` comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        };
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// Every `crate::…`, `super::…` and `self::…` path in a line, as its segments.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut rest = line;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let segs: Vec<String> = tail
                .split("::")
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|s| !s.is_empty())
                .collect();
            if segs.len() > 1 {
                out.push(segs);
            }
        }
    }
    out
}

/// The module a path starts from, made absolute (`super::x` in `a/b.rs` → `a::x`).
fn absolute(from: &Source, segs: &[String]) -> Vec<String> {
    let mut base: Vec<String> = from.module.clone();
    let mut rest = segs;
    match segs[0].as_str() {
        "crate" => {
            base.clear();
            rest = &segs[1..];
        }
        "self" => rest = &segs[1..],
        _ => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
    }
    base.extend(rest.iter().cloned());
    base
}

fn layer(module: &[String]) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| module.first() == Some(&l.to_string()))
}

/// Every rule broken in `sources`, one line each.
fn violations(sources: &[Source]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut found = Vec::new();
    // Edges between sibling files of one folder: folder → (from child → to children).
    let mut siblings: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for s in sources {
        let top = s.module.first().cloned().unwrap_or_default();
        let terminal =
            TERMINAL.contains(&top.as_str()) || (s.module.is_empty() && s.path == "main.rs");
        for (n, line) in code_lines(&s.text) {
            if !terminal && TERMINAL_ONLY.iter().any(|t| line.contains(t)) {
                found.push(format!(
                    "{}:{n}: clap or printing outside cmd/: {}",
                    s.path,
                    line.trim()
                ));
            }
            for segs in paths_in(line) {
                let target = absolute(s, &segs);
                if let (Some(mine), Some(theirs)) = (layer(&s.module), layer(&target)) {
                    if theirs > mine {
                        found.push(format!(
                            "{}:{n}: {} imports {} (a higher layer)",
                            s.path, LAYERS[mine], LAYERS[theirs]
                        ));
                    }
                }
                // A reference into a sibling of this file (same parent folder, other child).
                let parent: Vec<String> = if s.is_mod_file {
                    match s.module.split_last() {
                        Some((_, p)) => p.to_vec(),
                        None => continue,
                    }
                } else {
                    s.module[..s.module.len() - 1].to_vec()
                };
                let Some(me) = s.module.get(parent.len()) else {
                    continue;
                };
                if target.len() > parent.len() && target[..parent.len()] == parent[..] {
                    let other = &target[parent.len()];
                    let mut child = parent.clone();
                    child.push(other.clone());
                    if other != me && modules.contains(&child) {
                        siblings
                            .entry(parent.clone())
                            .or_default()
                            .entry(me.clone())
                            .or_default()
                            .insert(other.clone());
                    }
                }
            }
        }
    }
    for (folder, edges) in &siblings {
        if let Some(cycle) = find_cycle(edges) {
            let name = if folder.is_empty() {
                "src".to_owned()
            } else {
                folder.join("/")
            };
            found.push(format!("import cycle in {name}/: {}", cycle.join(" → ")));
        }
    }
    found
}

/// A cycle in a directed graph, as the nodes along it (first repeated last).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn layers_only_point_down_and_folders_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = load(&src);
    assert!(sources.len() > 50, "read {} files", sources.len());
    let found = violations(&sources);
    assert!(
        found.is_empty(),
        "layer rules broken:\n{}",
        found.join("\n")
    );
}

fn file(path: &str, text: &str) -> Source {
    let (module, is_mod_file) = module_of(Path::new(path));
    Source {
        path: path.into(),
        module,
        is_mod_file,
        text: text.into(),
    }
}

#[test]
fn the_check_catches_an_upward_import_printing_and_a_cycle() {
    let sources = [
        file("mesh/mod.rs", "pub mod a;\npub mod b;\n"),
        file("mesh/a.rs", "use super::b::B;\nuse crate::http::route;\n"),
        file("mesh/b.rs", "use crate::mesh::a::A; // fine alone\n"),
        file("engine/mod.rs", "fn f() { println!(\"hi\"); }\n"),
        file(
            "catalog/p.rs",
            "fn f() { let _ = writeln!(std::io::stdout(), \"x\"); }\n",
        ),
        file(
            "cmd/mod.rs",
            "use crate::node::Node;\nfn f() { println!(\"ok\"); }\n",
        ),
        file("http/mod.rs", "// crate::cmd in a comment is fine\n"),
    ];
    let found = violations(&sources);
    assert!(
        found
            .iter()
            .any(|f| f.contains("mesh/a.rs:2: mesh imports http")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.contains("engine/mod.rs:1: clap or printing")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.contains("catalog/p.rs:1: clap or printing")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.starts_with("import cycle in mesh/")),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "{found:?}");
}

#[test]
fn parent_and_child_references_are_not_cycles() {
    let sources = [
        file("mesh/mod.rs", "pub mod a;\nuse a::A;\npub struct Shared;\n"),
        file(
            "mesh/a.rs",
            "use super::Shared;\nuse crate::mesh::Shared as S;\n",
        ),
        file("mesh/net/mod.rs", "pub mod x;\npub mod y;\n"),
        file("mesh/net/x.rs", "use super::y::Y;\n"),
        file("mesh/net/y.rs", "use crate::util::time;\n"),
    ];
    assert_eq!(violations(&sources), Vec::<String>::new());
}
