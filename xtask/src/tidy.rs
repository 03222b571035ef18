//! House rules checked as tests: every Rust source file starts with a `//!` doc.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(name.as_ref(), "target" | "peers" | ".git")
                    && !name.starts_with("target")
                {
                    rust_files(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_module_starts_with_a_doc_comment() {
        let root = crate::util::project_root();
        let mut files = Vec::new();
        for krate in [
            "lb-core",
            "lb-group",
            "lb-rls",
            "lb-transport",
            "lb-testkit",
            "xtask",
        ] {
            rust_files(&root.join(krate), &mut files);
        }
        assert!(files.len() > 10, "found only {files:?}");
        let missing: Vec<_> = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .collect();
        assert!(
            missing.is_empty(),
            "files without a leading //! doc: {missing:?}"
        );
    }
}
