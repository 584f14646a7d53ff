//! The README's configuration tables name every environment variable the binaries read: each
//! `pub const … = "LAMBDAWATCH_…"` / `"OTEL_…"` in a `config.rs` must appear in README.md.

use lambdawatch_tests::repo_root;

fn env_consts(src: &str) -> Vec<String> {
    src.lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains(": &str = \""))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|v| v.starts_with("LAMBDAWATCH_") || v.starts_with("OTEL_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_documents_every_environment_variable() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in ["extension/src/config.rs", "collector/src/config.rs"] {
        let src = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let vars = env_consts(&src);
        assert!(!vars.is_empty(), "no environment constants found in {file}");
        seen += vars.len();
        for v in vars {
            if !readme.contains(&format!("`{v}`")) && !readme.contains(&format!("`{v} ")) {
                missing.push(format!("{v} ({file})"));
            }
        }
    }
    assert!(seen > 20, "only {seen} variables found: the scan is broken");
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:#?}"
    );
}

#[test]
fn the_scan_finds_constants() {
    let src = "pub const A: &str = \"LAMBDAWATCH_X\";\npub const B: &str = \"other\";\nconst C: &str = \"OTEL_Y\";";
    assert_eq!(env_consts(src), vec!["LAMBDAWATCH_X".to_owned()]);
}
