//! Turning results into what people read: the paper's findings checked on the numbers,
//! `results.csv`, `report.md` and the plots (learning vs forgetting scatter, curves over budget,
//! training loss), as in-memory files so the CLI and the browser share them.

use super::results::{FORGETTING_SCORE, Finding, Point, Results, RunRecord, SOURCE_PERPLEXITY};
use crate::analysis::plot::{Chart, Series, chart_files};
use crate::error::Result;
use crate::files::File;

/// Each method's point at the target's largest budget.
fn last_points<'a>(r: &'a Results, target: &str) -> Vec<&'a Point> {
    let max = r
        .points
        .iter()
        .filter(|p| p.target == target)
        .map(|p| p.budget)
        .fold(f64::NEG_INFINITY, f64::max);
    r.points
        .iter()
        .filter(|p| p.target == target && p.budget == max)
        .collect()
}

fn run<'a>(r: &'a Results, target: &str, method: &str) -> Option<&'a RunRecord> {
    r.runs
        .iter()
        .find(|x| x.target == target && x.method == method)
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// The forgetting measures present, the configured axis first, with "higher is better".
fn forgetting_measures(r: &Results) -> Vec<(&'static str, bool)> {
    let axis = r.forgetting_key();
    let mut out = vec![axis];
    for m in [(FORGETTING_SCORE, true), (SOURCE_PERPLEXITY, false)] {
        if m.0 != axis.0 && r.base.contains_key(m.0) {
            out.push(m);
        }
    }
    out
}

/// The seeds of the finished runs, in the config's order.
pub fn seeds(r: &Results) -> Vec<u64> {
    r.config
        .run_seeds()
        .into_iter()
        .filter(|s| r.runs.iter().any(|x| x.seed == *s))
        .collect()
}

/// Mean and standard error of the mean (0 for one value); NaN values are left out.
pub fn mean_se(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The runs and points of one seed.
fn only_seed(r: &Results, seed: u64) -> Results {
    Results {
        points: r
            .points
            .iter()
            .filter(|p| p.seed == seed)
            .cloned()
            .collect(),
        runs: r.runs.iter().filter(|x| x.seed == seed).cloned().collect(),
        ..r.clone()
    }
}

/// `r` with every (target, method, budget) point and every (target, method) run averaged over
/// the seeds that have it (losses step by step, the spectrum summary's numbers).
pub fn mean_over_seeds(r: &Results) -> Results {
    let mut points: Vec<Point> = Vec::new();
    for p in &r.points {
        if points
            .iter()
            .any(|q| q.target == p.target && q.method == p.method && q.budget == p.budget)
        {
            continue;
        }
        let same: Vec<&Point> = r
            .points
            .iter()
            .filter(|q| q.target == p.target && q.method == p.method && q.budget == p.budget)
            .collect();
        let mean =
            |f: &dyn Fn(&Point) -> f64| mean_se(&same.iter().map(|q| f(q)).collect::<Vec<_>>()).0;
        let mut m = p.clone();
        m.learning = mean(&|q| q.learning);
        m.forgetting = mean(&|q| q.forgetting);
        m.train_loss = p
            .train_loss
            .map(|_| mean(&|q| q.train_loss.unwrap_or(f64::NAN)));
        for (k, v) in m.metrics.iter_mut() {
            *v = mean(&|q| q.metrics.get(k).copied().unwrap_or(f64::NAN));
        }
        points.push(m);
    }
    let mut runs: Vec<RunRecord> = Vec::new();
    for x in &r.runs {
        if runs
            .iter()
            .any(|y| y.target == x.target && y.method == x.method)
        {
            continue;
        }
        let same: Vec<&RunRecord> = r
            .runs
            .iter()
            .filter(|y| y.target == x.target && y.method == x.method)
            .collect();
        let mut m = x.clone();
        // Runs of one method have the same schedule, so their logged steps line up.
        m.losses = x
            .losses
            .iter()
            .enumerate()
            .map(|(i, &(step, _))| {
                let v: Vec<f64> = same
                    .iter()
                    .filter_map(|y| y.losses.get(i).filter(|l| l.0 == step).map(|l| l.1))
                    .collect();
                (step, mean_se(&v).0)
            })
            .collect();
        if let Some(serde_json::Value::Object(obj)) = &mut m.spectrum {
            for (k, v) in obj.iter_mut() {
                if v.is_number() {
                    let vals: Vec<f64> = same
                        .iter()
                        .filter_map(|y| y.spectrum.as_ref()?.get(k)?.as_f64())
                        .collect();
                    *v = serde_json::json!(mean_se(&vals).0);
                }
            }
        }
        runs.push(m);
    }
    Results {
        points,
        runs,
        ..r.clone()
    }
}

/// Check the paper's qualitative findings (../PAPER.md, 1–5) on the numbers; findings about
/// forgetting are checked on every forgetting measure present. With several seeds: on the
/// means over seeds, and on each seed's runs alone (`per_seed`).
pub fn findings(r: &Results) -> Vec<Finding> {
    let seeds = seeds(r);
    if seeds.len() < 2 {
        return findings_of(r);
    }
    let mut out = findings_of(&mean_over_seeds(r));
    let each: Vec<Vec<Finding>> = seeds
        .iter()
        .map(|&s| findings_of(&only_seed(r, s)))
        .collect();
    for f in &mut out {
        f.per_seed = each
            .iter()
            .map(|fs| {
                fs.iter()
                    .find(|g| g.target == f.target && g.claim == f.claim)
                    .and_then(|g| g.reproduced)
            })
            .collect();
    }
    out
}

fn findings_of(r: &Results) -> Vec<Finding> {
    let mut out = Vec::new();
    let measures = forgetting_measures(r);
    let better = |a: f64, b: f64, higher: bool| if higher { a > b } else { a < b };
    let get = |p: &Point, k: &str| p.metrics.get(k).copied().unwrap_or(f64::NAN);
    for t in &r.config.targets {
        let (lkey, l_higher) = r.learning_key(&t.name);
        let last = last_points(r, &t.name);
        let full = last
            .iter()
            .find(|p| run(r, &t.name, &p.method).is_some_and(|x| x.kind == "full"));
        let mut loras: Vec<(&Point, usize)> = last
            .iter()
            .filter_map(|p| Some((*p, run(r, &t.name, &p.method)?.rank?)))
            .collect();
        loras.sort_by_key(|x| x.1);
        let finding = |claim: String, reproduced: Option<bool>, evidence: String| Finding {
            target: t.name.clone(),
            claim,
            reproduced,
            evidence,
            per_seed: Vec::new(),
        };
        let (Some(f), false) = (full, loras.is_empty()) else {
            out.push(finding(
                "1–3. LoRA vs full fine-tuning".into(),
                None,
                "needs a full and a LoRA method".into(),
            ));
            continue;
        };
        let list = |key: &str| -> String {
            loras
                .iter()
                .map(|(p, _)| format!("{} {}", p.method, fmt(get(p, key))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let learn_ok = loras
            .iter()
            .all(|(p, _)| better(get(f, &lkey), get(p, &lkey), l_higher));
        out.push(finding(
            "1. LoRA learns less than full fine-tuning".into(),
            Some(learn_ok),
            format!(
                "{lkey} at the largest budget (base {}): full {} vs {}",
                r.base.get(&lkey).map_or("-".into(), |v| fmt(*v)),
                fmt(get(f, &lkey)),
                list(&lkey)
            ),
        ));
        let mut forget_axis = None;
        for &(key, higher) in &measures {
            let ok = loras
                .iter()
                .all(|(p, _)| better(get(p, key), get(f, key), higher));
            forget_axis.get_or_insert(ok);
            out.push(finding(
                format!("2. LoRA forgets less than full fine-tuning ({key})"),
                Some(ok),
                format!(
                    "{key} at the largest budget (base {}; {} is better): full {} vs {}",
                    r.base.get(key).map_or("-".into(), |v| fmt(*v)),
                    if higher { "higher" } else { "lower" },
                    fmt(get(f, key)),
                    list(key)
                ),
            ));
            let mut pts: Vec<&Point> = r
                .points
                .iter()
                .filter(|p| p.target == t.name && p.method == f.method)
                .collect();
            pts.sort_by(|a, b| a.budget.total_cmp(&b.budget));
            if let (Some(first), Some(lastp), Some(&b)) = (pts.first(), pts.last(), r.base.get(key))
            {
                let grows = better(b, get(first, key), higher)
                    && (pts.len() == 1 || better(get(first, key), get(lastp, key), higher));
                let series: Vec<String> = pts
                    .iter()
                    .map(|p| format!("{} → {}", p.budget, fmt(get(p, key))))
                    .collect();
                out.push(finding(
                    format!("2b. Forgetting grows with more training, full fine-tuning ({key})"),
                    Some(grows),
                    format!("base {}; by budget: {}", fmt(b), series.join(", ")),
                ));
            }
        }
        out.push(finding(
            "3. On the learning-vs-forgetting plot LoRA sits at less learning and less forgetting"
                .into(),
            Some(learn_ok && forget_axis == Some(true)),
            format!("findings 1 and 2 ({}), for every LoRA rank", measures[0].0),
        ));
        let spec = run(r, &t.name, &f.method).and_then(|x| x.spectrum.as_ref());
        if let (Some(s), Some((_, min_rank))) = (spec, loras.first()) {
            let att = s["mean_rank_attention"].as_f64().unwrap_or(0.0);
            let mlp = s["mean_rank_mlp"].as_f64().unwrap_or(0.0);
            let mean = (att + mlp) / 2.0;
            out.push(finding(
                "4. Full fine-tuning's weight change is far from low rank (rank for 90% of its energy ≥ 10× the smallest LoRA rank)".into(),
                Some(mean >= 10.0 * *min_rank as f64),
                format!(
                    "mean rank for 90% of ΔW's σ² energy: attention {att:.1}, MLP {mlp:.1} ({:.0}% / {:.0}% of full rank) vs LoRA rank {min_rank}",
                    100.0 * s["mean_rank_fraction_attention"].as_f64().unwrap_or(0.0),
                    100.0 * s["mean_rank_fraction_mlp"].as_f64().unwrap_or(0.0),
                ),
            ));
            out.push(finding(
                "4b. Full fine-tuning's weight change needs higher rank in MLP than in attention matrices".into(),
                Some(mlp > att),
                format!("mean rank MLP {mlp:.1} vs attention {att:.1}"),
            ));
        }
        let dkey = format!("{}/humaneval/unique_fraction", t.name);
        if f.metrics.contains_key(&dkey) {
            out.push(finding(
                "5. LoRA keeps generations more diverse than full fine-tuning (distinct HumanEval samples per prompt)".into(),
                Some(loras.iter().all(|(p, _)| get(p, &dkey) > get(f, &dkey))),
                format!(
                    "{dkey} at the largest budget (base {}): full {} vs {}",
                    r.base.get(&dkey).map_or("-".into(), |v| fmt(*v)),
                    fmt(get(f, &dkey)),
                    list(&dkey)
                ),
            ));
        }
    }
    out
}

/// `results.csv`: one row per method × budget, base rows first.
pub fn csv(r: &Results) -> String {
    let mut keys: Vec<&String> = r.base.keys().collect();
    for p in &r.points {
        keys.extend(p.metrics.keys());
    }
    keys.sort();
    keys.dedup();
    let mut s = String::from(
        "target,method,seed,budget,budget_unit,step,tokens_seen,learning,forgetting,train_loss",
    );
    for k in &keys {
        s.push(',');
        s.push_str(k);
    }
    s.push('\n');
    for t in &r.config.targets {
        let (lkey, _) = r.learning_key(&t.name);
        let get = |k: &str| r.base.get(k).map_or(String::new(), |v| v.to_string());
        s.push_str(&format!(
            "{},base,,0,{},0,0,{},{},",
            t.name,
            t.budget_unit.as_str(),
            get(&lkey),
            get(r.forgetting_key().0)
        ));
        for k in &keys {
            s.push(',');
            s.push_str(&get(k));
        }
        s.push('\n');
    }
    for p in &r.points {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}",
            p.target,
            p.method,
            p.seed,
            p.budget,
            p.budget_unit.as_str(),
            p.step,
            p.tokens_seen,
            p.learning,
            p.forgetting,
            p.train_loss.map_or(String::new(), |l| l.to_string())
        ));
        for k in &keys {
            s.push(',');
            s.push_str(&p.metrics.get(*k).map_or(String::new(), |v| v.to_string()));
        }
        s.push('\n');
    }
    s
}

/// `report.md`: per-target tables, findings, timings, plots. With several seeds the tables show
/// mean ± standard error over seeds and the findings say in how many seeds each holds.
pub fn markdown(r: &Results) -> String {
    let seeds = seeds(r);
    let multi = seeds.len() > 1;
    let mean = mean_over_seeds(r);
    let mut s = format!(
        "# tunelab experiment `{}`\n\nBase model `{}`, device {}, {}. Forgetting score = mean `acc_norm` (length-normalised log-likelihood accuracy, lm-evaluation-harness) over the forgetting evals in the HellaSwag / ARC / WinoGrande layouts built from held-out source text; source perplexity on held-out source text.\n\n",
        r.config.name,
        r.config.base_model,
        r.device,
        if multi {
            format!(
                "{} seeds ({}; data from seed {}): values are mean ± standard error over seeds",
                seeds.len(),
                seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                r.config.seed
            )
        } else {
            format!("seed {}", seeds.first().copied().unwrap_or(r.config.seed))
        }
    );
    if !r.missing.is_empty() {
        let total = r.missing.len() + r.runs.len();
        s.push_str(&format!(
            "**Partial results: {} of {total} runs are not finished** ({}); collect again when they are.\n\n",
            r.missing.len(),
            r.missing.join(", ")
        ));
    }
    for t in &r.config.targets {
        // Data left out silently would change what a run learned: say so.
        let skipped = r
            .runs
            .iter()
            .find(|x| x.target == t.name)
            .map_or(0, |x| x.skipped_lines);
        if skipped > 0 {
            s.push_str(&format!(
                "**Target `{}`: {skipped} bad lines of {} were skipped** (`skip_bad_lines`).\n\n",
                t.name, t.train
            ));
        }
    }
    for t in &r.config.targets {
        let (lkey, l_higher) = r.learning_key(&t.name);
        s.push_str(&format!(
            "## Target `{}` ({}, budgets {} {}, learning metric `{lkey}`, {} is better)\n\n",
            t.name,
            t.regime,
            t.budgets
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("/"),
            t.budget_unit.as_str(),
            if l_higher { "higher" } else { "lower" }
        ));
        s.push_str(&format!(
            "| method | budget | learning `{lkey}` | forgetting score `{FORGETTING_SCORE}` (higher = less forgetting) | `{SOURCE_PERPLEXITY}` (lower = less forgetting) | train loss | trainable params | lr |\n|---|---|---|---|---|---|---|---|\n",
        ));
        let b = |k: &str| r.base.get(k).map_or("-".into(), |v| fmt(*v));
        s.push_str(&format!(
            "| base | 0 | {} | {} | {} | - | - | - |\n",
            b(&lkey),
            b(FORGETTING_SCORE),
            b(SOURCE_PERPLEXITY)
        ));
        for p in mean.points.iter().filter(|p| p.target == t.name) {
            let run = run(&mean, &t.name, &p.method);
            // The value over seeds: mean ± standard error when there are several.
            let cell = |f: &dyn Fn(&Point) -> Option<f64>| -> String {
                let v: Vec<f64> = r
                    .points
                    .iter()
                    .filter(|q| {
                        q.target == p.target && q.method == p.method && q.budget == p.budget
                    })
                    .filter_map(f)
                    .collect();
                match (v.len(), mean_se(&v)) {
                    (0, _) => "-".into(),
                    (1, (m, _)) => fmt(m),
                    (_, (m, se)) => format!("{} ± {}", fmt(m), fmt(se)),
                }
            };
            let m = |k: &'static str| cell(&move |q: &Point| q.metrics.get(k).copied());
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.method,
                p.budget,
                cell(&|q| Some(q.learning)),
                m(FORGETTING_SCORE),
                m(SOURCE_PERPLEXITY),
                cell(&|q| q.train_loss),
                run.map_or("-".into(), |x| x.trainable_parameters.to_string()),
                run.map_or("-".into(), |x| format!("{:.0e}", x.lr)),
            ));
        }
        s.push_str(&format!(
            "\n![learning vs forgetting](scatter_{0}.png)\n![learning over budget](learning_{0}.png) ![forgetting over budget](forgetting_{0}.png)\n![training loss](loss_{0}.png)\n\n",
            t.name
        ));
    }
    s.push_str("## The paper's findings on this run\n\n");
    if multi {
        s.push_str("Checked on the means over seeds (reproduced) and on each seed's runs alone (seeds: in how many it holds).\n\n| target | finding | reproduced | seeds | evidence |\n|---|---|---|---|---|\n");
    } else {
        s.push_str("| target | finding | reproduced | evidence |\n|---|---|---|---|\n");
    }
    let word = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "not checked",
    };
    for f in &r.findings {
        let seeds_cell = if multi {
            let held = f.per_seed.iter().filter(|v| **v == Some(true)).count();
            let all = if held == f.per_seed.len() {
                " (all)"
            } else {
                ""
            };
            format!(" {held}/{}{all} |", f.per_seed.len())
        } else {
            String::new()
        };
        s.push_str(&format!(
            "| {} | {} | {} |{seeds_cell} {} |\n",
            f.target,
            f.claim,
            word(f.reproduced),
            f.evidence
        ));
    }
    if multi {
        // "code: 1, 4, 4b; math: 4": the findings that hold in every seed, by target.
        let mut all: Vec<String> = Vec::new();
        for t in &r.config.targets {
            let ids: Vec<&str> = r
                .findings
                .iter()
                .filter(|f| f.target == t.name && !f.per_seed.is_empty())
                .filter(|f| f.per_seed.iter().all(|v| *v == Some(true)))
                .map(|f| {
                    f.claim
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('.')
                })
                .collect();
            if !ids.is_empty() {
                all.push(format!("{}: {}", t.name, ids.join(", ")));
            }
        }
        s.push_str(&format!(
            "\nFindings that hold in every seed: {}.\n",
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join("; ")
            }
        ));
    }
    if r.config.targets.iter().all(|t| t.humaneval.is_none()) {
        s.push_str("\nFinding 5 (diversity of sampled generations) is not checked: no target samples HumanEval (`[targets.humaneval]`); `tunelab eval --task humaneval` reports it.\n");
    }
    s.push('\n');
    let tm = &r.timings;
    if tm.collected {
        s.push_str(&format!(
            "## Time\n\nCollected from runs done separately; device time: base evaluation {:.1} s, training {:.1} s, evaluation {:.1} s, spectra {:.1} s, total {:.1} s (wall time depends on how many ran at once).\n",
            tm.base_eval, tm.train, tm.eval, tm.spectrum, tm.total
        ));
        return s;
    }
    s.push_str(&format!(
        "## Time\n\nsetup (load model, generate + tokenize data; no pretraining) {:.1} s, base evaluation {:.1} s, training {:.1} s, evaluation {:.1} s, spectra {:.1} s, total {:.1} s{}.\n",
        tm.setup,
        tm.base_eval,
        tm.train,
        tm.eval,
        tm.spectrum,
        tm.total,
        if tm.reused_runs > 0 {
            format!(" ({} runs reused from an earlier invocation, their times are from when they ran; the total is this invocation's wall time)", tm.reused_runs)
        } else {
            String::new()
        }
    ));
    s
}

/// How a metric is drawn: perplexities as their logarithm (the NLL in nats), so a base model
/// with perplexity in the thousands does not squash every fine-tuned point into a corner.
fn axis(key: &str) -> (fn(f64) -> f64, String) {
    if key.ends_with("/perplexity") {
        (f64::ln, format!("ln {key}"))
    } else {
        (|v| v, key.to_string())
    }
}

/// The plots of every target, as SVG and (natively) PNG files.
pub fn plots(r: &Results) -> Result<Vec<File>> {
    let mut files = Vec::new();
    let (fkey, f_higher) = r.forgetting_key();
    // One curve per method: means over seeds, with standard-error bars when there are several.
    let mean = mean_over_seeds(r);
    for t in &r.config.targets {
        let (lkey, l_higher) = r.learning_key(&t.name);
        let methods: Vec<&str> = mean
            .runs
            .iter()
            .filter(|x| x.target == t.name)
            .map(|x| x.method.as_str())
            .collect();
        let budgets = |m: &str| -> Vec<f64> {
            let mut v: Vec<f64> = mean
                .points
                .iter()
                .filter(|p| p.target == t.name && p.method == m)
                .map(|p| p.budget)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        // (mean, standard error) over seeds of `f` at one budget, in the plotted space.
        let stat = |m: &str, budget: f64, f: &dyn Fn(&Point) -> f64| -> (f64, f64) {
            let v: Vec<f64> = r
                .points
                .iter()
                .filter(|p| p.target == t.name && p.method == m && p.budget == budget)
                .map(f)
                .collect();
            mean_se(&v)
        };
        let (lx, lname) = axis(&lkey);
        let (fx, fname) = axis(fkey);
        let base_l = r.base.get(&lkey).map(|&v| lx(v));
        let base_f = r.base.get(fkey).map(|&v| fx(v));
        let mut scatter = vec![];
        if let (Some(l), Some(f)) = (base_l, base_f) {
            scatter.push(Series {
                label: "base".into(),
                points: vec![(l, f)],
                line: false,
                point_labels: vec![],
                errors: vec![],
            });
        }
        for m in &methods {
            let bs = budgets(m);
            let (mut points, mut errors) = (vec![], vec![]);
            for &b in &bs {
                let (x, ex) = stat(m, b, &|p| lx(p.learning));
                let (y, ey) = stat(m, b, &|p| fx(p.forgetting));
                points.push((x, y));
                errors.push((ex, ey));
            }
            scatter.push(Series {
                label: m.to_string(),
                points,
                line: true,
                point_labels: bs.iter().map(|b| format!("  {b}")).collect(),
                errors,
            });
        }
        let unit = t.budget_unit.as_str();
        files.extend(chart_files(
            &format!("scatter_{}", t.name),
            &Chart {
                title: format!("{}: learning vs forgetting (labels: {unit})", t.name),
                x_desc: format!(
                    "learning: {lname} ({} is better)",
                    if l_higher { "higher" } else { "lower" }
                ),
                y_desc: format!(
                    "forgetting: {fname} ({} = less forgetting)",
                    if f_higher { "higher" } else { "lower" }
                ),
                series: scatter,
            },
        )?);
        for (name, title, key_desc, get) in [
            (
                "learning",
                "learning over budget",
                lname.clone(),
                (|p: &Point| p.learning) as fn(&Point) -> f64,
            ),
            (
                "forgetting",
                "forgetting over budget",
                fname.clone(),
                |p: &Point| p.forgetting,
            ),
        ] {
            let tx = if name == "learning" { lx } else { fx };
            let base = if name == "learning" { base_l } else { base_f };
            let series = methods
                .iter()
                .map(|m| {
                    let mut s = Series::line(*m, base.map(|b| (0.0, b)).into_iter().collect());
                    s.errors = s.points.iter().map(|_| (0.0, 0.0)).collect();
                    for b in budgets(m) {
                        let (y, ey) = stat(m, b, &|p| tx(get(p)));
                        s.points.push((b, y));
                        s.errors.push((0.0, ey));
                    }
                    s
                })
                .collect();
            files.extend(chart_files(
                &format!("{name}_{}", t.name),
                &Chart {
                    title: format!("{}: {title}", t.name),
                    x_desc: format!("budget ({unit})"),
                    y_desc: key_desc,
                    series,
                },
            )?);
        }
        let series = mean
            .runs
            .iter()
            .filter(|x| x.target == t.name)
            .map(|x| {
                Series::line(
                    x.method.clone(),
                    x.losses.iter().map(|&(s, l)| (s as f64, l)).collect(),
                )
            })
            .collect();
        files.extend(chart_files(
            &format!("loss_{}", t.name),
            &Chart {
                title: format!("{}: training loss", t.name),
                x_desc: "optimizer step".into(),
                y_desc: "loss (nats / token)".into(),
                series,
            },
        )?);
    }
    Ok(files)
}

/// All report files: results.json, results.csv, report.md and the plots.
pub fn files(r: &Results) -> Result<Vec<File>> {
    let mut out = vec![
        File::json("results.json", r),
        File::new("results.csv", csv(r)),
        File::new("report.md", markdown(r)),
    ];
    out.extend(plots(r)?);
    Ok(out)
}
