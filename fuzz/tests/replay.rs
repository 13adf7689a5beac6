//! Every committed corpus file (`fuzz/corpus/<target>/`) and every fixed crash
//! (`fuzz/crashes/<target>/`) through its target: what a fuzzer once found stays fixed, and
//! the seeds keep parsing the way they did. CI runs this with the rest of `cargo test`.

use std::path::Path;

fn replay(dir: &str) -> usize {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    let mut failed = Vec::new();
    for (name, target) in berth_fuzz::TARGETS {
        let Ok(rd) = std::fs::read_dir(base.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if !f.is_file() || f.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(f.display().to_string());
            }
            n += 1;
        }
    }
    assert!(failed.is_empty(), "these inputs fail: {failed:#?}");
    n
}

#[test]
fn corpora_replay() {
    let n = replay("corpus");
    // Every target has a corpus.
    for (name, _) in berth_fuzz::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(name);
        let count = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(count > 0, "no corpus for {name} in {}", dir.display());
    }
    assert!(n > 0);
}

#[test]
fn fixed_crashes_replay() {
    replay("crashes");
}

/// The SigV4 seeds are what botocore signs (fuzz/seeds.py): the target reads them as the
/// server would, so they verify, and one changed byte of the body does not.
#[test]
fn botocore_seeds_verify() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sigv4");
    for seed in ["seed-ecs-header", "seed-sts-form", "seed-sts-presigned"] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        assert!(berth_fuzz::sigv4_verifies(&data), "{seed} does not verify");
        if seed != "seed-sts-presigned" {
            let mut changed = data.clone();
            *changed.last_mut().unwrap() ^= 1;
            assert!(
                !berth_fuzz::sigv4_verifies(&changed),
                "{seed} changed still verifies"
            );
        }
    }
}
