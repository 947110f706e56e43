//! HumanEval-style code tasks: sampled completions, executed against the tests with the
//! system `python3` (only when the user allows it), pass@k with the unbiased estimator, and
//! the diversity of the samples.
//!
//! Executing model-written code is dangerous: it runs with the user's rights. tunelab runs it
//! in a fresh temporary directory, with Python's isolated mode (`-I`), an empty environment
//! and a timeout, and — where `unshare` can make one — in a network namespace with no network.
//! That is not a sandbox; `--allow-exec` is off by default.

use std::collections::{HashMap, HashSet};

use super::tasks::CodeProblem;

/// Stop sequences of the HumanEval task (end of the function body).
pub const STOP: &[&str] = &["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// Unbiased pass@k (Chen et al. 2021): `1 - C(n-c, k) / C(n, k)`, as a stable product.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// The program that checks one completion.
pub fn program(p: &CodeProblem, completion: &str) -> String {
    format!(
        "{}{}\n\n{}\n\ncheck({})\n",
        p.prompt, completion, p.test, p.entry_point
    )
}

/// Run `program` with `python3`; true when it exits with status 0 within `timeout`.
#[cfg(feature = "native")]
pub fn passes(program: &str, timeout: std::time::Duration) -> std::io::Result<bool> {
    use std::process::{Command, Stdio};
    let dir = tempfile_dir()?;
    let path = dir.join("candidate.py");
    std::fs::write(&path, program)?;
    // A private network namespace when unprivileged namespaces are available.
    let isolate = Command::new("unshare")
        .args(["-rn", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if isolate {
        let mut c = Command::new("unshare");
        c.args(["-rn", "python3", "-I"]);
        c
    } else {
        let mut c = Command::new("python3");
        c.arg("-I");
        c
    };
    let mut child = cmd
        .arg(&path)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = std::time::Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait()? {
            break status.success();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

#[cfg(feature = "native")]
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tunelab-exec-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// How varied the samples for one prompt are (the paper counts unique outputs).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Diversity {
    /// Distinct completions / samples.
    pub unique_fraction: f64,
    /// Distinct completions among the passing / failing samples (when tests ran).
    pub unique_passing: Option<usize>,
    pub unique_failing: Option<usize>,
    /// Distinct word unigrams / bigrams over all samples' words.
    pub distinct_1: f64,
    pub distinct_2: f64,
}

/// Diversity of `samples` (with pass/fail flags when they were executed).
pub fn diversity(samples: &[String], passed: Option<&[bool]>) -> Diversity {
    let unique: HashSet<&String> = samples.iter().collect();
    let split = passed.map(|p| {
        let mut sets: HashMap<bool, HashSet<&String>> = HashMap::new();
        for (s, ok) in samples.iter().zip(p) {
            sets.entry(*ok).or_default().insert(s);
        }
        let count = |b: bool| sets.get(&b).map_or(0, HashSet::len);
        (count(true), count(false))
    });
    let words: Vec<Vec<&str>> = samples
        .iter()
        .map(|s| s.split_whitespace().collect())
        .collect();
    let distinct = |n: usize| {
        let grams: Vec<&[&str]> = words.iter().flat_map(|w| w.windows(n)).collect();
        if grams.is_empty() {
            return 0.0;
        }
        grams.iter().collect::<HashSet<_>>().len() as f64 / grams.len() as f64
    };
    Diversity {
        unique_fraction: unique.len() as f64 / samples.len().max(1) as f64,
        unique_passing: split.map(|s| s.0),
        unique_failing: split.map(|s| s.1),
        distinct_1: distinct(1),
        distinct_2: distinct(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(5, 0, 1), 0.0);
        assert_eq!(pass_at_k(5, 5, 1), 1.0);
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // 1 - C(7,5)/C(10,5) = 1 - 21/252
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
    }

    #[test]
    fn diversity_counts_unique_samples_and_ngrams() {
        let s = vec![
            "return a + b".to_string(),
            "return a + b".to_string(),
            "return b + a".to_string(),
        ];
        let d = diversity(&s, Some(&[true, true, false]));
        assert!((d.unique_fraction - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((d.unique_passing, d.unique_failing), (Some(1), Some(1)));
        assert!((d.distinct_1 - 4.0 / 12.0).abs() < 1e-12);
    }

    #[cfg(feature = "native")]
    #[test]
    fn executes_candidates_with_a_timeout() {
        let t = std::time::Duration::from_secs(10);
        assert!(passes("assert 1 + 1 == 2\n", t).unwrap());
        assert!(!passes("assert 1 + 1 == 3\n", t).unwrap());
        assert!(!passes("while True: pass\n", std::time::Duration::from_millis(300)).unwrap());
    }
}
