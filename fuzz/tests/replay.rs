//! Replays the checked-in seed corpora (`corpus/<target>/*`) through the same target bodies the libFuzzer binaries
//! run, on plain stable `cargo test`, without libFuzzer or `-Z` flags. It is not fuzzing (no mutation, no coverage
//! feedback): it keeps every known input passing, cheaply, in CI. `scripts/fuzz-smoke` runs it.
//!
//! The reproducers of open findings (`artifacts/<target>/crash-*`) are replayed by the ignored test
//! `known_findings_still_crash`, which needs the full checks: `FUZZ_STRICT=1 cargo test --test replay -- --ignored`.
//! Once a finding is fixed its file stops crashing, the test says which, and the file moves to `corpus/` (as
//! `fixed-*`, where the normal replay keeps it passing).

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn replay(folder: &str, expect_panic: bool) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in disaster_cloud_fuzz::TARGETS {
        for file in files(&root.join(name)) {
            let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if file_name.starts_with('.')
                || file_name.ends_with(".md")
                || (expect_panic && !file_name.starts_with("crash-"))
            {
                continue;
            }
            let data = std::fs::read(&file).expect("readable corpus file");
            count += 1;
            let panicked = std::panic::catch_unwind(|| target(&data)).is_err();
            if expect_panic && !panicked {
                eprintln!("no longer crashes (fixed?): {}", file.display());
            }
            if panicked != expect_panic {
                failures.push(format!("{name}: {}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} input(s) did not behave:\n{}", failures.len(), failures.join("\n"));
    count
}

#[test]
fn corpus_replays_without_a_crash() {
    let n = replay("corpus", false);
    assert!(n > 0, "no corpus files found");
    eprintln!("replayed {n} corpus inputs");
}

#[test]
#[ignore = "replays the open findings in artifacts/; each still crashing is what `pass` means here"]
fn known_findings_still_crash() {
    assert!(
        disaster_cloud_fuzz::targets::strict(),
        "run with FUZZ_STRICT=1: the targets relax the known findings otherwise"
    );
    let n = replay("artifacts", true);
    eprintln!("replayed {n} artifacts");
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in disaster_cloud_fuzz::TARGETS {
        assert!(root.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "fuzz_targets/{name}.rs missing");
        assert!(!files(&root.join("corpus").join(name)).is_empty(), "corpus/{name}/ is empty");
    }
}
