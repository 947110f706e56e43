//! The fuzz targets of `fuzz/` on stable, in `cargo test`: every target over its seed corpus
//! (`fuzz/seeds.txt`) and over every minimised input a fuzzing campaign found a bug with
//! (`fuzz/regressions/<target>/`), so a fixed crash stays fixed. The campaign itself is
//! `scripts/fuzz.sh` (nightly, cargo-fuzz).

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files under `dir` (recursively) whose name ends in `suffix`.
fn find(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, suffix, out);
        } else if e.file_name().to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// The seed inputs of `target`, as fuzz/seeds.txt describes them.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let list = std::fs::read_to_string(repo().join("fuzz/seeds.txt")).unwrap();
    let mut inputs = Vec::new();
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let [t, dir, suffix] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("fuzz/seeds.txt: bad line `{line}`")
        };
        if t != target {
            continue;
        }
        let mut files = Vec::new();
        find(&repo().join(dir), suffix, &mut files);
        assert!(
            !files.is_empty(),
            "fuzz/seeds.txt: nothing matches `{line}`"
        );
        for f in files {
            let mut bytes = std::fs::read(&f).unwrap();
            if target == "peft" {
                bytes.push(0);
                bytes.extend(std::fs::read(f.with_file_name("adapter_model.safetensors")).unwrap());
            }
            inputs.push(bytes);
        }
    }
    inputs
}

#[test]
fn every_fuzz_target_accepts_its_seeds_and_past_crashes() {
    for &(name, target) in targets::TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        let mut regressions = Vec::new();
        let dir = repo().join("fuzz/regressions").join(name);
        if dir.is_dir() {
            find(&dir, "", &mut regressions);
        }
        for input in seeds {
            target(&input);
        }
        for path in regressions {
            eprintln!("{name}: {}", path.display());
            target(&std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn streamed_parsers_refuse_what_the_header_cannot_justify() {
    // A safetensors header claiming a 10^12-byte tensor in a small file, and a GGUF header
    // claiming 10^12 tensors: errors before any allocation of that size (the targets would
    // abort on the allocation).
    let header =
        br#"{"w":{"dtype":"F32","shape":[250000000000],"data_offsets":[0,1000000000000]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0; 64]);
    targets::safetensors(&st);
    let mut gguf = b"GGUF".to_vec();
    gguf.extend(3u32.to_le_bytes());
    gguf.extend(1_000_000_000_000u64.to_le_bytes()); // tensors
    gguf.extend(0u64.to_le_bytes()); // metadata entries
    targets::gguf(&gguf);
}
