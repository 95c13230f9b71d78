//! Learning-rate schedules: constant or cosine decay, each with an optional linear warm-up.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    Linear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Steps of linear warm-up from 0 to the peak learning rate.
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak (cosine and linear decay).
    pub min_ratio: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { kind: ScheduleKind::Constant, warmup_steps: 0, min_ratio: 0.0 }
    }
}

impl ScheduleConfig {
    /// Learning rate at 0-based `step` of `total` steps for peak rate `lr`.
    pub fn lr_at(&self, lr: f64, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let frac = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        let floor = lr * self.min_ratio;
        match self.kind {
            ScheduleKind::Constant => lr,
            ScheduleKind::Cosine => floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()),
            ScheduleKind::Linear => floor + (lr - floor) * (1.0 - frac),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_hits_the_hand_computed_points() {
        let s = ScheduleConfig { kind: ScheduleKind::Cosine, warmup_steps: 4, min_ratio: 0.1 };
        let lr = 1e-3;
        assert!((s.lr_at(lr, 0, 14) - 2.5e-4).abs() < 1e-12);
        assert!((s.lr_at(lr, 3, 14) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(lr, 4, 14) - 1e-3).abs() < 1e-12);
        // Halfway through the decay: floor + (peak - floor) / 2.
        assert!((s.lr_at(lr, 9, 14) - (1e-4 + 0.5 * 9e-4)).abs() < 1e-12);
        assert!((s.lr_at(lr, 14, 14) - 1e-4).abs() < 1e-12);
        let c = ScheduleConfig::default();
        assert_eq!(c.lr_at(lr, 7, 10), lr);
    }
}
