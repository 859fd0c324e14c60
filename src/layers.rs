//! The module graph reads bottom-up, one way: a module uses only modules of
//! the layers below its own (see `docs/architecture.md`). This test reads
//! every source file and fails on a `crate::` path that goes sideways or up
//! the graph, and on a module no layer names.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, bottom first. Modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["names", "metrics"],
    &["message", "policy"],
    &["config"],
    &["bus", "embedded"],
    &["registry", "readstate", "accounts"],
    &["mailbox", "wake"],
    &["fleet"],
    &["wire"],
    &["http"],
    &["app"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules a source text names through `crate::` paths,
/// including those in `crate::{a, b::c}` groups.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth < 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                let mut depth = 0;
                let mut item = String::new();
                for c in group[..end].chars().chain([',']) {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            used.extend(first_segment(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
            }
            None => used.extend(first_segment(rest)),
        }
    }
    used
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every edge of `files` (path relative to `src/`, text) that runs against
/// the layers, as `"from -> to (file)"`.
fn wrong_edges(files: &[(String, String)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (path, text) in files {
        let from = path.split('/').next().unwrap_or_default().trim_end_matches(".rs");
        if matches!(from, "lib" | "main" | "layers") {
            continue;
        }
        let Some(own) = layer_of(from) else {
            wrong.push(format!("{from} is in no layer ({path})"));
            continue;
        };
        for to in used_modules(text).into_iter().filter(|to| to != from) {
            if layer_of(&to).is_none_or(|layer| layer >= own) {
                wrong.push(format!("{from} -> {to} ({path})"));
            }
        }
    }
    wrong
}

fn sources(dir: &Path, root: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, root, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src").to_string_lossy().into_owned();
            files.push((relative, std::fs::read_to_string(&path).expect("source file")));
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 50, "read the sources: {}", files.len());
    let wrong = wrong_edges(&files);
    assert!(wrong.is_empty(), "uses that run against the module layers:\n{}", wrong.join("\n"));
}

#[test]
fn a_use_up_or_sideways_is_caught_in_any_form() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = [
        file("bus/follow.rs", "use crate::http::AppState;"),
        file("wake/backlog.rs", "use crate::{bus::{Bus, Start}, mailbox::view};"),
        file("config/mod.rs", "let x = crate::cli::run();"),
        file("newthing.rs", "use crate::names::AgentName;"),
        file("http/mod.rs", "use crate::{self as root, bus, fleet::FleetView};\nuse crate::wake::WakeRecord;"),
    ];
    assert_eq!(
        wrong_edges(&files),
        [
            "bus -> http (bus/follow.rs)",
            "wake -> mailbox (wake/backlog.rs)",
            "config -> cli (config/mod.rs)",
            "newthing is in no layer (newthing.rs)",
        ]
    );
}
