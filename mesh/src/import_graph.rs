//! A check on the crate's own sources: no file imports in a circle, and none imports from a
//! floor above its own. A file that uses another (a `crate::` or `super::` path that names an
//! item of it, or a parent naming its submodule) is never used back by it, directly or through
//! others, so each one can be read, tested and changed from the files below it. A module may
//! use its ancestors (`super::`), which do not count. The floors are the table of
//! `docs/architecture.md` ("Layers"), read here, so the document and the code cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every source file of the crate by module path (`admin/routes`; the crate root is
/// ``), with its code: test modules and comment lines left out.
fn sources(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("source folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = path
                    .strip_prefix(root)
                    .expect("under the root")
                    .with_extension("")
                    .to_string_lossy()
                    .into_owned();
                let module = if module == "lib" {
                    String::new()
                } else {
                    module
                };
                let text = std::fs::read_to_string(&path).expect("source file");
                let code: Vec<&str> = text
                    .lines()
                    .take_while(|line| !line.starts_with("#[cfg(test)]"))
                    .filter(|line| !line.trim_start().starts_with("//"))
                    .collect();
                found.insert(module, code.join("\n"));
            }
        }
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a `{...}` group at the start of `text` names, each relative to the group.
fn group(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let (mut depth, mut item) = (0, String::new());
    for c in text.chars().skip(1) {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                paths.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    paths.push(item);
    paths
        .iter()
        .map(|item| {
            let item = item.split(" as ").next().unwrap_or("").trim();
            let item = item.split('{').next().unwrap_or("");
            item.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Every module path `code` (the file of `module`) refers to through `crate::` or `super::`.
fn referenced(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            if code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                let mut parent: Vec<String> = module.split('/').map(str::to_owned).collect();
                parent.pop();
                parent
            };
            let mut rest = &code[at + start.len()..];
            loop {
                let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                let segment = &rest[..end];
                if segment == "super" {
                    base.pop();
                } else if !segment.is_empty() {
                    base.push(segment.to_owned());
                }
                rest = &rest[end..];
                match rest.strip_prefix("::") {
                    Some(after) if after.starts_with('{') => {
                        for tail in group(after) {
                            paths.push(base.iter().cloned().chain(tail).collect());
                        }
                        break;
                    }
                    Some(after) => rest = after,
                    None => {
                        paths.push(base);
                        break;
                    }
                }
            }
        }
    }
    paths
}

/// Which file uses which, as module paths.
fn imports(sources: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let file_of = |path: &[String]| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("/"))
            .find_map(|m| sources.get_key_value(&m).map(|(k, _)| k.as_str()))
    };
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, code) in sources {
        let used = edges.entry(module.as_str()).or_default();
        for path in referenced(module, code) {
            if let Some(target) = file_of(&path)
                && target != module
                && !target.is_empty()
                && !module.starts_with(&format!("{target}/"))
            {
                used.insert(target);
            }
        }
        // A parent naming one of its submodules (`mod x;`, then `x::item`).
        for line in code.lines() {
            let line = line.trim();
            let Some(name) = line
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'))
            else {
                continue;
            };
            let child = if module.is_empty() {
                name.to_owned()
            } else {
                format!("{module}/{name}")
            };
            let named = code.match_indices(&format!("{name}::")).any(|(at, _)| {
                !code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| is_ident(c) || c == ':')
            });
            if named && let Some((child, _)) = sources.get_key_value(&child) {
                used.insert(child.as_str());
            }
        }
    }
    edges
}

/// The circles of `edges`: its strongly connected parts of more than one file (Tarjan).
fn circles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct Walk<'a, 'e> {
        edges: &'e BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<&'a str>>,
    }
    impl<'a> Walk<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for &w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut part = Vec::new();
                while let Some(w) = self.stack.pop() {
                    part.push(w);
                    if w == v {
                        break;
                    }
                }
                if part.len() > 1 {
                    part.sort_unstable();
                    self.found.push(part);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The floors of the "Layers" table of `doc`: module path → floor (the crate root is `lib`).
fn floors(doc: &str) -> BTreeMap<String, u32> {
    let section = doc.split("\n## Layers\n").nth(1).unwrap_or("");
    let section = section.split("\n## ").next().unwrap_or("");
    let mut floors = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(floor) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        for name in cells.get(2).unwrap_or(&"").split(',') {
            let name = name.trim().trim_matches('`');
            let path = if name == "lib" { "" } else { name };
            floors.insert(path.to_owned(), floor);
        }
    }
    floors
}

/// The floor of `module`: that of the longest path of the table that contains it.
fn floor_of(floors: &BTreeMap<String, u32>, module: &str) -> Option<u32> {
    floors
        .iter()
        .filter(|(path, _)| {
            module == path.as_str() || (!path.is_empty() && module.starts_with(&format!("{path}/")))
        })
        .max_by_key(|(path, _)| path.len())
        .map(|(_, floor)| *floor)
}

/// The imports of `edges` that go up a floor (`from (floor) -> to (floor)`), and the files no
/// floor holds.
fn upward(
    edges: &BTreeMap<&str, BTreeSet<&str>>,
    floors: &BTreeMap<String, u32>,
) -> (Vec<String>, Vec<String>) {
    let (mut up, mut unplaced) = (Vec::new(), Vec::new());
    for (from, to) in edges {
        let Some(low) = floor_of(floors, from) else {
            unplaced.push((*from).to_owned());
            continue;
        };
        for to in to {
            if let Some(high) = floor_of(floors, to).filter(|high| *high > low) {
                up.push(format!("{from} ({low}) -> {to} ({high})"));
            }
        }
    }
    (up, unplaced)
}

#[test]
fn no_file_imports_in_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = sources(&root);
    let edges = imports(&sources);
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the sources were read"
    );
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "files that import each other, directly or through others: {found:?}"
    );
}

#[test]
fn the_check_sees_every_kind_of_import() {
    let source = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(m, code)| ((*m).to_owned(), (*code).to_owned()))
            .collect()
    };
    let edges_of = |pairs| {
        let sources = source(pairs);
        let edges = imports(&sources);
        edges
            .iter()
            .flat_map(|(from, to)| to.iter().map(move |to| format!("{from}->{to}")))
            .collect::<Vec<_>>()
    };
    let edges = edges_of(&[
        (
            "a",
            "mod x;\nuse crate::b::{Thing, c::Other};\nfn f() { x::go() }",
        ),
        ("a/x", "use super::super::b::c::Other; use super::Parent;"),
        ("b", "pub struct Thing;"),
        (
            "b/c",
            "// use crate::a;\npub struct Other; fn g() { crate::a::f() }",
        ),
    ]);
    assert_eq!(edges, ["a->a/x", "a->b", "a->b/c", "a/x->b/c", "b/c->a"]);
    let sources = source(&[("a", "use crate::b::X;"), ("b", "use crate::a::Y;")]);
    assert_eq!(circles(&imports(&sources)), [vec!["a", "b"]]);
}

#[test]
fn no_import_goes_up_a_floor() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(manifest.join("../docs/architecture.md"))
        .expect("docs/architecture.md");
    let floors = floors(&doc);
    assert!(floors.len() > 10, "the Layers table was read: {floors:?}");
    let sources = sources(&manifest.join("src"));
    let (up, unplaced) = upward(&imports(&sources), &floors);
    assert!(
        unplaced.is_empty(),
        "files the Layers table of docs/architecture.md does not place: {unplaced:?}"
    );
    assert!(up.is_empty(), "imports that go up a floor: {up:#?}");
}

#[test]
fn the_floor_check_reads_the_table_and_sees_an_import_go_up() {
    let doc = "# x\n## Layers\n\n| Floor | Modules | What |\n|---|---|---|\n\
               | 1 | `a`, `b/c` | low |\n| 2 | `b`, `lib` | high |\n\n## Next\n| 9 | `z` | no |\n";
    let floors = floors(doc);
    assert_eq!(floors.len(), 4, "{floors:?}");
    assert_eq!(floor_of(&floors, "b/c/d"), Some(1), "the longest path wins");
    assert_eq!(floor_of(&floors, "b/x"), Some(2));
    assert_eq!(floor_of(&floors, ""), Some(2), "the crate root");
    assert_eq!(
        floor_of(&floors, "z"),
        None,
        "only the Layers section counts"
    );
    let sources: BTreeMap<String, String> = [
        ("a", "use crate::b::X;"),
        ("b", "use crate::a::Y;"),
        ("b/c", ""),
        ("z", ""),
    ]
    .iter()
    .map(|(m, code)| ((*m).to_owned(), (*code).to_owned()))
    .collect();
    let (up, unplaced) = upward(&imports(&sources), &floors);
    assert_eq!(up, ["a (1) -> b (2)"]);
    assert_eq!(unplaced, ["z"]);
}
