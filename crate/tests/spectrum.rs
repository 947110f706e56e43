//! Weight-change spectra match numpy.linalg.svd (references from
//! tests/fixtures/make_spectrum_fixtures.py), including a rank-deficient ΔW and a LoRA adapter
//! analysed through its QR factors; bad input is refused with the first mismatching tensor.

mod common;

use burn::tensor::Device;
use common::*;
use tunelab::Session;
use tunelab::analysis::spectrum::{self, SpectrumOptions, rank_for};
use tunelab::hf::ModelSource;

fn load(dir: &std::path::Path) -> Session {
    pollster::block_on(Session::load(
        &ModelSource::Dir(dir.into()),
        Device::flex(),
        &mut |_| {},
    ))
    .unwrap()
}

fn reference() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("spectrum/reference.json")).unwrap(),
    )
    .unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Relative error of the top singular values (those above 1e-6 of the largest).
fn check_sv(ours: &[f64], want: &[f64], what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}");
    let top = want[0];
    for (k, (a, b)) in ours.iter().zip(want).enumerate() {
        if *b > 1e-6 * top {
            assert!((a - b).abs() <= 1e-4 * b, "{what}: σ_{k} {a} vs numpy {b}");
        }
    }
}

#[test]
fn checkpoint_spectra_match_numpy() {
    let r = reference();
    let base = load(&fixtures().join("llama-gqa"));
    let ft = load(&fixtures().join("spectrum/llama-ft"));
    for (ti, t) in floats(&r["thresholds"]).into_iter().enumerate() {
        let opts = SpectrumOptions {
            threshold: t,
            ..Default::default()
        };
        let got = pollster::block_on(spectrum::compare_checkpoints(&base.model, &ft.model, &opts))
            .unwrap();
        let want = r["checkpoint"]["matrices"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let name = w["name"].as_str().unwrap();
            assert_eq!(format!("{}.weight", g.module), name);
            assert_eq!(serde_json::json!(g.shape), w["shape"]);
            check_sv(&g.sv_delta, &floats(&w["sv_delta"]), &format!("{name} ΔW"));
            check_sv(
                g.sv_base.as_ref().unwrap(),
                &floats(&w["sv_base"]),
                &format!("{name} W_base"),
            );
            check_sv(
                g.sv_ft.as_ref().unwrap(),
                &floats(&w["sv_ft"]),
                &format!("{name} W_ft"),
            );
            assert_eq!(
                g.rank_delta as u64,
                w["rank"]["delta"][ti].as_u64().unwrap(),
                "{name} ΔW rank at {t}"
            );
            assert_eq!(
                g.rank_base.unwrap() as u64,
                w["rank"]["base"][ti].as_u64().unwrap(),
                "{name} base rank at {t}"
            );
            assert_eq!(
                g.rank_ft.unwrap() as u64,
                w["rank"]["ft"][ti].as_u64().unwrap(),
                "{name} ft rank at {t}"
            );
        }
        if t == 0.9 {
            // The rank-deficient ΔW (exactly rank 3 before f32 rounding).
            let q0 = got
                .iter()
                .find(|g| g.module == "model.layers.0.self_attn.q_proj")
                .unwrap();
            assert_eq!(q0.rank_delta, 3);
            // Our Gaussian baseline falls in numpy's range over 1000 draws.
            let band = &r["gaussian"]["draws"];
            for g in &got {
                let key = format!("{}x{}", g.shape[0], g.shape[1]);
                if let Some(b) = band.get(&key) {
                    let (lo, hi) = (
                        b["rank_0.9_wide"]["min"].as_u64().unwrap(),
                        b["rank_0.9_wide"]["max"].as_u64().unwrap(),
                    );
                    let rn = g.rank_noise.unwrap() as u64;
                    assert!(
                        lo <= rn && rn <= hi,
                        "{key}: Gaussian rank {rn} outside [{lo}, {hi}]"
                    );
                }
            }
            let s = spectrum::summarize(&got, t);
            assert!(s.mean_rank_mlp > s.mean_rank_attention);
        }
    }
}

#[test]
fn adapter_spectra_come_from_the_qr_factors_and_match_numpy() {
    let r = reference();
    let mut s = load(&fixtures().join("gpt2"));
    pollster::block_on(
        s.attach_adapter(&ModelSource::Dir(fixtures().join("train/gpt2-lora-init"))),
    )
    .unwrap();
    let got = pollster::block_on(spectrum::adapter_spectra(
        &s.model,
        &SpectrumOptions::default(),
    ))
    .unwrap();
    let want = r["adapter"]["matrices"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for g in &got {
        let w = want
            .iter()
            .find(|w| w["module"] == g.module.as_str())
            .unwrap_or_else(|| panic!("{}", g.module));
        assert_eq!(serde_json::json!(g.shape), w["shape"]);
        assert_eq!(g.sv_delta.len(), 4, "rank ≤ r");
        check_sv(&g.sv_delta, &floats(&w["sv"])[..4], &g.module);
        assert_eq!(g.rank_delta as u64, w["rank"][1].as_u64().unwrap());
    }
}

#[test]
fn bad_input_is_refused_clearly() {
    let llama = load(&fixtures().join("llama-gqa"));
    let gpt2 = load(&fixtures().join("gpt2"));
    let e = pollster::block_on(spectrum::compare_checkpoints(
        &llama.model,
        &gpt2.model,
        &SpectrumOptions::default(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not the same architecture") && e.contains("tensor `"),
        "{e}"
    );
    let e = SpectrumOptions {
        threshold: 1.5,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("`threshold`"), "{e}");
    let mut s = load(&fixtures().join("llama-gqa"));
    let e = pollster::block_on(
        s.attach_adapter(&ModelSource::Dir(fixtures().join("train/gpt2-lora-init"))),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("match no linear layer"), "{e}");
    assert_eq!(rank_for(&[1.0, 1.0, 1.0, 1.0], 0.9), 4);
}

#[test]
fn spectrum_cli_writes_tables_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = tunelab(&[
        "spectrum",
        fixtures().join("llama-gqa").to_str().unwrap(),
        fixtures().join("spectrum/llama-ft").to_str().unwrap(),
        "--plot",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["runs"][0]["matrices"].as_array().unwrap().len(), 14);
    for f in [
        "rank_vs_layer.svg",
        "rank_vs_layer.png",
        "cumulative_variance.svg",
        "cumulative_variance.png",
    ] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap();
        assert!(bytes.len() > 1000, "{f}");
    }
    assert!(
        std::fs::read(dir.path().join("rank_vs_layer.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
}
