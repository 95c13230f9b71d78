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
    /// The model complied without harmful content (a judge that reads the content can say so;
    /// the keyword judge cannot and never returns it).
    Harmless,
    /// Empty or degenerate output (repetition, no words): neither safe nor harmful, counted
    /// separately so that gibberish is never reported as safety.
    Degenerate,
}

/// One judged response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub judge: String,
    /// The judge's p(harmful) when it has one (the learned judge), for ROC analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_harmful: Option<f64>,
}

pub trait Judge: Send + Sync {
    fn name(&self) -> String;
    fn judge(&self, prompt: &str, response: &str) -> crate::Result<Judgement>;

    /// Judge many pairs at once (a model-based judge batches its forward passes); by default
    /// one at a time.
    fn judge_batch(&self, pairs: &[(&str, &str)]) -> crate::Result<Vec<Judgement>> {
        pairs.iter().map(|(p, r)| self.judge(p, r)).collect()
    }

    /// Units of progress (`crate::train::progress::advance`) judging `n` answers reports, so an
    /// evaluation can count them in its total: none by default.
    fn progress_units(&self, _n: usize) -> usize {
        0
    }
}

/// Which judge scores the answers of an evaluation (`[eval] judge` in an experiment file):
/// `judge = "keyword"` (the default, [`crate::eval::keyword::KeywordJudge`]) or
/// `judge = { http = { url = "...", model = "..." } }` (an OpenAI-compatible endpoint,
/// [`crate::eval::http_judge::HttpJudge`]) or `judge = { learned = "judges/harm-smollm2" }`
/// (a trained head over a frozen backbone, [`crate::eval::learned_judge::LearnedJudge`]).
/// Unknown names are errors listing these. On the command line: [`JudgeSpec::parse`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeSpec {
    #[default]
    Keyword,
    Http(crate::eval::http_judge::HttpJudgeConfig),
    Learned(std::path::PathBuf),
}

impl JudgeSpec {
    pub fn is_keyword(&self) -> bool {
        matches!(self, Self::Keyword)
    }

    /// The judge itself (an HTTP judge checks its settings here; a learned judge loads its
    /// backbone on the CPU).
    pub fn build(&self) -> crate::Result<Box<dyn Judge>> {
        Ok(match self {
            Self::Keyword => Box::new(crate::eval::keyword::KeywordJudge),
            Self::Http(c) => Box::new(crate::eval::http_judge::HttpJudge::new(c.clone())?),
            Self::Learned(dir) => {
                Box::new(crate::eval::learned_judge::LearnedJudge::load(dir, &burn::prelude::Device::flex())?)
            }
        })
    }

    /// The judge, built once per process and then shared (a learned judge loads its backbone
    /// once however many evaluations use it).
    pub fn shared(&self) -> crate::Result<std::sync::Arc<dyn Judge>> {
        type Cache = std::sync::Mutex<Vec<(JudgeSpec, std::sync::Arc<dyn Judge>)>>;
        static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some((_, j)) = cache.lock().expect("judge cache").iter().find(|(s, _)| s == self) {
            return Ok(j.clone());
        }
        let j: std::sync::Arc<dyn Judge> = std::sync::Arc::from(self.build()?);
        cache.lock().expect("judge cache").push((self.clone(), j.clone()));
        Ok(j)
    }

    /// The command-line form: `keyword`, `learned:DIR`, or `http:URL` (model name after a
    /// `#`: `http:http://127.0.0.1:8000/v1#llama-guard`; default `judge`).
    pub fn parse(text: &str) -> crate::Result<Self> {
        let t = text.trim();
        if t == "keyword" {
            return Ok(Self::Keyword);
        }
        if let Some(dir) = t.strip_prefix("learned:").filter(|d| !d.is_empty()) {
            return Ok(Self::Learned(dir.into()));
        }
        if let Some(rest) = t.strip_prefix("http:").filter(|u| !u.is_empty()) {
            let (url, model) = rest.rsplit_once('#').unwrap_or((rest, "judge"));
            let c = crate::eval::http_judge::HttpJudgeConfig {
                url: url.to_string(),
                model: model.to_string(),
                ..Default::default()
            };
            return Ok(Self::Http(c));
        }
        Err(crate::Error::Invalid(format!("judge `{t}`: expected `keyword`, `learned:DIR` or `http:URL[#MODEL]`")))
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;
    use crate::eval::suite::EvalConfig;

    fn eval(text: &str) -> std::result::Result<EvalConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_judge_is_a_typed_setting() {
        assert_eq!(eval("limit = 5").unwrap().judge, JudgeSpec::Keyword);
        let k = eval("judge = \"keyword\"").unwrap().judge;
        assert_eq!(k.build().unwrap().name(), crate::eval::keyword::KeywordJudge.name());
        let h = eval("judge = { http = { url = \"http://127.0.0.1:9/v1\", model = \"guard\" } }").unwrap().judge;
        assert!(matches!(&h, JudgeSpec::Http(c) if c.model == "guard"));
        assert_eq!(h.build().unwrap().name(), "http:guard");
        let bad = eval("judge = \"keywrd\"").unwrap_err();
        assert!(bad.contains("keywrd") && bad.contains("`keyword`") && bad.contains("`http`"), "{bad}");
        let bad = eval("judge = { http = { url = \"x\", modle = \"m\" } }").unwrap_err();
        assert!(bad.contains("modle"), "{bad}");
        let l = eval("judge = { learned = \"judges/harm-smollm2\" }").unwrap().judge;
        assert_eq!(l, JudgeSpec::Learned("judges/harm-smollm2".into()));
        // The command-line form names the same settings.
        assert_eq!(JudgeSpec::parse("keyword").unwrap(), JudgeSpec::Keyword);
        assert_eq!(JudgeSpec::parse("learned:judges/harm-smollm2").unwrap(), l);
        let h = JudgeSpec::parse("http:http://127.0.0.1:9/v1#guard").unwrap();
        assert!(matches!(&h, JudgeSpec::Http(c) if c.model == "guard" && c.url == "http://127.0.0.1:9/v1"), "{h:?}");
        for bad in ["keywrd", "learned:", "http:"] {
            let e = JudgeSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("learned:DIR"), "{e}");
        }
        // A learned judge without its directory is a clear error naming it.
        let e = JudgeSpec::Learned("no/such/judge".into()).build().err().unwrap().to_string();
        assert!(e.contains("no/such/judge") && e.contains("judge.json"), "{e}");
        // The keyword judge is not written, so older `config.json` files still match.
        let json = serde_json::to_value(EvalConfig::default()).unwrap();
        assert!(json.get("judge").is_none(), "{json}");
    }
}
