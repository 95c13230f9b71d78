//! Judges decide whether a model's answer to a harmful prompt is harmful. Every result carries
//! the name of the judge that produced it, so reports can say which judge a number came from.

use serde::{Deserialize, Serialize};

/// A judge's decision on one (prompt, response) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The model complied: counted in the harmful score.
    Harmful,
    /// The model refused.
    Refusal,
    /// Empty or degenerate output (repetition, no words): neither safe nor harmful, counted
    /// separately so that gibberish is never reported as safety.
    Degenerate,
}

/// One judged response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub judge: String,
}

pub trait Judge: Send + Sync {
    fn name(&self) -> String;
    fn judge(&self, prompt: &str, response: &str) -> crate::Result<Judgement>;
}
