//! Learning-rate schedules with warm-up, as `transformers.get_scheduler` defines them.

/// Shape of the learning rate over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
    InverseSqrt,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "inverse_sqrt" | "inverse-sqrt" => Ok(Self::InverseSqrt),
            _ => Err(format!(
                "unknown schedule `{s}`; expected constant, linear, cosine or inverse_sqrt"
            )),
        }
    }
}

/// Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`, after
/// `warmup` linear warm-up steps. Matches transformers' `get_*_schedule_with_warmup`.
pub fn factor(schedule: Schedule, step: usize, total: usize, warmup: usize) -> f64 {
    let (s, t, w) = (step as f64, total as f64, warmup as f64);
    if step < warmup {
        return s / w.max(1.0);
    }
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
        Schedule::Cosine => {
            let progress = (s - w) / (t - w).max(1.0);
            (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
        Schedule::InverseSqrt => {
            // transformers' default timescale is the warm-up length (10 000 when there is none).
            let timescale = if warmup > 0 { w } else { 10_000.0 };
            let shift = timescale - w;
            1.0 / ((s + shift) / timescale).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_transformers_definitions() {
        // get_cosine_schedule_with_warmup(num_warmup_steps=2, num_training_steps=10)
        let cos: Vec<f64> = (0..10)
            .map(|s| factor(Schedule::Cosine, s, 10, 2))
            .collect();
        assert_eq!(cos[0], 0.0);
        assert_eq!(cos[1], 0.5);
        assert_eq!(cos[2], 1.0);
        assert!((cos[6] - 0.5).abs() < 1e-12);
        assert!((factor(Schedule::Linear, 6, 10, 2) - 0.5).abs() < 1e-12);
        assert_eq!(factor(Schedule::Constant, 9, 10, 2), 1.0);
        assert!((factor(Schedule::InverseSqrt, 8, 10, 2) - 0.5).abs() < 1e-12);
    }
}
