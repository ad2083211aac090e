//! The library's modules depend on each other one way. Read from the source
//! text: every path written after `crate::` or a run of `super::`, outside
//! comments and `#[cfg(test)]` items (and the `tests.rs` / `*_tests.rs` files
//! they load), is an edge from the module that writes it to the module it
//! names (a `pub(in …)` visibility is not an edge). A cycle among the
//! top-level modules (each child of `ops` counted on its own: `ops` is a set
//! of unrelated services), among their children, or among their children's
//! children, fails.
//!
//! A test binary of its own: it reads files and needs nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_top_level_modules_depend_on_each_other_one_way() {
    let graph = graph(1);
    assert!(graph.contains_key("delivery") && graph.contains_key("ops::config"));
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new(), "{graph:#?}");
}

#[test]
fn their_children_depend_on_each_other_one_way() {
    let graph = graph(2);
    assert!(
        graph.contains_key("delivery::coordinator") && graph.contains_key("kafka::dead_letter")
    );
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new(), "{graph:#?}");
}

#[test]
fn the_delivery_coordinators_loop_depends_on_its_state_machine_not_the_other_way() {
    let graph = graph(3);
    let machine = "delivery::coordinator::machine";
    assert!(graph.contains_key(machine));
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new(), "{graph:#?}");
    let shell = ["effects", "drain"].map(|m| format!("delivery::coordinator::{m}"));
    let reaches_up: Vec<&String> = graph[machine]
        .iter()
        .filter(|to| shell.contains(to) || to.as_str() == "delivery::coordinator")
        .collect();
    assert_eq!(reaches_up, Vec::<&String>::new(), "{:#?}", graph[machine]);
}

#[test]
fn the_reader_sees_a_cycle_when_there_is_one() {
    let mut graph = Graph::new();
    let mut add = |module: &str, code: &str| {
        let module: Vec<String> = module.split("::").map(str::to_owned).collect();
        let code = without_tests_and_comments(code);
        for target in references(&code, &module) {
            graph
                .entry(node(&module, 1))
                .or_default()
                .insert(node(&target, 1));
        }
    };
    add(
        "kafka::dead_letter",
        "use crate::delivery::retry::RetryPolicy;",
    );
    add(
        "delivery::attempt",
        "use super::super::kafka::dead_letter::DeadLetter;",
    );
    add(
        "event",
        "// use crate::kafka;\n#[cfg(test)]\nmod tests { use crate::kafka; }",
    );
    assert_eq!(
        cycles(&graph),
        vec![vec!["delivery".to_owned(), "kafka".to_owned()]]
    );
}

/// Edges between modules, each cut to `depth` names (one more under `ops`).
fn graph(depth: usize) -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let module = module_of(&file, &root);
        let text = std::fs::read_to_string(&file).unwrap();
        let code = without_tests_and_comments(&text);
        let from = node(&module, depth);
        let edges = graph.entry(from.clone()).or_default();
        for target in references(&code, &module) {
            let to = node(&target, depth);
            if to != from && !to.is_empty() {
                edges.insert(to);
            }
        }
    }
    // Only modules: a path may end in an item (`crate::retry` of a function).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|to| modules.contains(to));
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` is `a::b`; `src/a/mod.rs` is `a`; `src/lib.rs` is the root.
fn module_of(file: &Path, root: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut names: Vec<String> = relative
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    if matches!(
        names.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        names.pop();
    }
    names
}

/// The first `depth` names of a module path, one more under `ops`.
fn node(path: &[String], depth: usize) -> String {
    let depth = if path.first().is_some_and(|n| n == "ops") {
        depth + 1
    } else {
        depth
    };
    path.iter()
        .take(depth)
        .cloned()
        .collect::<Vec<_>>()
        .join("::")
}

/// The code without `//` comments and without `#[cfg(test)]` items: a test
/// module (always last in its file) to the end of the file, another item to
/// the end of its block or its `;`.
fn without_tests_and_comments(text: &str) -> String {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let head = item.trim_start();
        let declared_only = item
            .find(';')
            .is_some_and(|semi| item.find('{').is_none_or(|brace| semi < brace));
        if (head.starts_with("mod ") || head.starts_with("#[path")) && !declared_only {
            // An inline test module: the rest of the file, by this
            // project's habit (its braces may sit in strings).
            return out;
        }
        rest = match (item.find('{'), item.find(';')) {
            (_, Some(semi)) if item.find('{').is_none_or(|brace| semi < brace) => &item[semi + 1..],
            (Some(brace), _) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[brace..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = brace + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                &item[end..]
            }
            _ => "",
        };
    }
    out.push_str(rest);
    out
}

/// Module paths named after `crate::` or `super::`, resolved from `module`.
fn references(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // A visibility (`pub(in crate::a::b)`) names where an item may be
        // seen from, not a module the item uses.
        let starts_word = (at == 0 || !(is_ident(bytes[at - 1]) || bytes[at - 1] == b':'))
            && !bytes[..at].ends_with(b"pub(in ");
        let (base, mut next) = if starts_word && bytes[at..].starts_with(b"crate::") {
            (Vec::new(), at + "crate::".len())
        } else if starts_word && bytes[at..].starts_with(b"super::") {
            let mut ups = 0;
            let mut next = at;
            while bytes[next..].starts_with(b"super::") {
                ups += 1;
                next += "super::".len();
            }
            (module[..module.len().saturating_sub(ups)].to_vec(), next)
        } else {
            at += 1;
            continue;
        };
        let mut path = base;
        loop {
            let start = next;
            while next < bytes.len() && is_ident(bytes[next]) {
                next += 1;
            }
            let name = &code[start..next];
            if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
                break;
            }
            path.push(name.to_owned());
            if bytes[next..].starts_with(b"::") {
                next += 2;
            } else {
                break;
            }
        }
        found.push(path);
        at = next.max(at + 1);
    }
    found
}

/// The strongly connected groups of more than one module, each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(at) = stack.pop() {
            for to in graph.get(&at).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    stack.push(to.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reaches(m))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, reached) in &reach {
        if !reached.contains(*module) {
            continue;
        }
        let group: Vec<String> = reached
            .iter()
            .filter(|other| reach.get(other).is_some_and(|r| r.contains(*module)))
            .cloned()
            .collect();
        groups.insert(group);
    }
    groups.into_iter().collect()
}
