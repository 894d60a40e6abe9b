//! The crate's top-level modules depend on each other without a cycle: each concern sits in one
//! layer (the lake and its commit protocol under the pipeline stages, reporting at the bottom,
//! the command line on top), so a module can be read, changed and tested knowing only those
//! below it. The graph is read from the source: every `crate::<module>` path a file names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let deps = modules.entry(module.clone()).or_default();
        // `crate::name` anywhere (paths, `use crate::{a, b}` lists are expanded below).
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                let inner = &list[..list.find('}').unwrap_or(list.len())];
                for item in inner.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() && name != module {
                        deps.insert(name);
                    }
                }
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    for deps in modules.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    modules
}

/// A cycle through the graph, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 10, "the source was not read: {g:?}");
    assert!(g["cli"].contains("process") && g["process"].contains("lake"), "the reader misses imports: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}\nthe graph: {g:#?}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

/// The layers the README draws: a module may only use modules of lower layers (or its own).
#[test]
fn modules_use_only_lower_layers() {
    let layers: &[&[&str]] = &[
        &["blocking", "sql", "aws", "indicators"],
        &["faults", "config"],
        &["lake"],
        &["report"],
        &["source", "process", "catalog", "query"],
        &["simulator", "serve", "service"],
        &["cli"],
    ];
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    for (module, deps) in graph() {
        let own = layer_of(&module).unwrap_or_else(|| panic!("module {module} is in no layer: add it to this test and the README"));
        for dep in deps {
            let theirs = layer_of(&dep).unwrap_or_else(|| panic!("module {dep} is in no layer"));
            assert!(theirs < own, "{module} (layer {own}) uses {dep} (layer {theirs}): a module uses only lower layers");
        }
    }
}
