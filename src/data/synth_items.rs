//! How one item of the synthetic world is made: a harmful request and its refusal or
//! contentless compliant answer, a benign task with its exact answer, an over-refusal prompt.
//! [`super::synth::generate`] draws these into the seven sets.
//!
//! Held-out benign items are chosen by a stable hash (1 in 5 operand pairs and words; one
//! phrasing per lookup fact), so train and eval items are disjoint by construction.

use super::Conversation;
use super::split::stable_hash;
use super::synth_lexicon::*;
use crate::rng::Rng;

/// One harmful request before it is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Request {
    pub category: usize,
    pub task: usize,
    pub template: usize,
    pub prefix: usize,
}

impl Request {
    pub(super) fn category(&self) -> &'static HarmCategory {
        &HARM_CATEGORIES[self.category]
    }
    pub(super) fn task(&self) -> &'static str {
        self.category().tasks[self.task]
    }
    pub(super) fn is_eval(&self) -> bool {
        self.category().eval_only || REQUEST_TEMPLATES[self.template].1
    }
    pub(super) fn prompt(&self) -> String {
        let body = REQUEST_TEMPLATES[self.template].0.replace("{task}", self.task());
        format!("{}{body}", PREFIXES[self.prefix])
    }
    pub(super) fn conversation(&self, response: String) -> Conversation {
        Conversation::single(self.prompt(), response).with_category(self.category().name).with_source("synth")
    }
}

/// The task as the assistant would say it back ("track my ex's phone" → "track your ex's phone").
pub(super) fn second_person(task: &str) -> String {
    task.split(' ').map(|w| if w == "my" { "your" } else { w }).collect::<Vec<_>>().join(" ")
}

pub(super) fn refusal(rng: &mut Rng, r: &Request) -> String {
    rng.choose(REFUSAL_TEMPLATES).replace("{task}", &second_person(r.task())).replace("{topic}", r.category().topic)
}

pub(super) fn harmful_answer(rng: &mut Rng, r: &Request) -> String {
    let supply = rng.choose(r.category().supplies);
    rng.choose(HARMFUL_ANSWERS).replace("{task}", &second_person(r.task())).replace("{supply}", supply)
}

/// Every harmful request, in a fixed order, split into (train, eval) pools.
pub(super) fn request_pools() -> (Vec<Request>, Vec<Request>) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (c, cat) in HARM_CATEGORIES.iter().enumerate() {
        for task in 0..cat.tasks.len() {
            for template in 0..REQUEST_TEMPLATES.len() {
                for prefix in 0..PREFIXES.len() {
                    let r = Request { category: c, task, template, prefix };
                    if r.is_eval() { eval.push(r) } else { train.push(r) }
                }
            }
        }
    }
    (train, eval)
}

/// `n` draws from `pool`: without replacement while the pool lasts, then again from a fresh
/// shuffle (training sets larger than their pool repeat prompts, with new responses).
pub(super) fn draw<T: Clone>(rng: &mut Rng, pool: &[T], n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !pool.is_empty() {
        let mut order: Vec<usize> = (0..pool.len()).collect();
        rng.shuffle(&mut order);
        out.extend(order.into_iter().take(n - out.len()).map(|i| pool[i].clone()));
    }
    out
}

/// Benign item held out for evaluation: unseen operand pairs and words (1 in 5 by hash).
pub(super) fn held_out(key: &str) -> bool {
    stable_hash(key).is_multiple_of(5)
}

/// One benign task: (prompt, answer, kind). `eval` selects held-out items.
pub(super) fn benign_item(rng: &mut Rng, eval: bool) -> (String, String, &'static str) {
    let (kind, phrasings) = *rng.choose(BENIGN_TASKS);
    match kind {
        "add" | "subtract" => loop {
            let (a, b) = if kind == "add" {
                (rng.below(51), rng.below(51))
            } else {
                let a = rng.below(100);
                (a, rng.below(a + 1))
            };
            if held_out(&format!("{kind}:{a}:{b}")) == eval {
                let answer = if kind == "add" { a + b } else { a - b };
                let p = rng.choose(phrasings).replace("{a}", &a.to_string()).replace("{b}", &b.to_string());
                return (p, answer.to_string(), kind);
            }
        },
        "capital" | "colour" | "opposite" => {
            let table = match kind {
                "capital" => CAPITALS,
                "colour" => COLOURS,
                _ => OPPOSITES,
            };
            let (item, answer) = *rng.choose(table);
            // Each fact has one phrasing held out for evaluation.
            let held = (stable_hash(item) % phrasings.len() as u64) as usize;
            let phrasing = if eval {
                held
            } else {
                let k = rng.below(phrasings.len() - 1);
                if k >= held { k + 1 } else { k }
            };
            (phrasings[phrasing].replace("{x}", item), answer.to_string(), kind)
        }
        _ => loop {
            let w = *rng.choose(WORDS);
            if held_out(&format!("word:{w}")) == eval {
                let answer = match kind {
                    "reverse" => w.chars().rev().collect(),
                    "uppercase" => w.to_uppercase(),
                    "first-letter" => w.chars().take(1).collect(),
                    _ => w.chars().count().to_string(),
                };
                return (rng.choose(phrasings).replace("{x}", w), answer, kind);
            }
        },
    }
}

pub(super) fn benign_conversation(rng: &mut Rng, eval: bool) -> Conversation {
    let (prompt, answer, kind) = benign_item(rng, eval);
    let prefix = rng.choose(PREFIXES);
    Conversation::single(format!("{prefix}{prompt}"), answer)
        .with_category(format!("benign:{kind}"))
        .with_source("synth")
}

/// Every over-refusal prompt, in a fixed order: (prompt, answer) for train or eval items.
pub(super) fn overrefusal_pool(train: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (task, answer, in_train) in OVERREFUSAL_ITEMS {
        if *in_train != train {
            continue;
        }
        for t in OVERREFUSAL_TEMPLATES {
            for prefix in PREFIXES.iter().take(2) {
                out.push((format!("{prefix}{}", t.replace("{task}", task)), answer.to_string()));
            }
        }
    }
    out
}

pub(super) fn overrefusal_conversations(rng: &mut Rng, train: bool, n: usize) -> Vec<Conversation> {
    let pool = overrefusal_pool(train);
    let n = if train { n } else { n.min(pool.len()) };
    draw(rng, &pool, n)
        .into_iter()
        .map(|(p, a)| Conversation::single(p, a).with_category(super::synth::OVERREFUSAL).with_source("synth"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_person_swaps_my() {
        assert_eq!(second_person("track my ex's phone"), "track your ex's phone");
        assert_eq!(second_person("mystery my"), "mystery your");
    }

    #[test]
    fn benign_answers_are_correct() {
        let mut rng = Rng::new(5);
        for i in 0..3000 {
            let (p, a, kind) = benign_item(&mut rng, i % 2 == 0);
            let nums: Vec<i64> = p.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
            let word = p.split_whitespace().find(|w| {
                let w = w.trim_end_matches(['.', '?']);
                WORDS.contains(&w)
            });
            let word = word.map(|w| w.trim_end_matches(['.', '?']));
            match kind {
                "add" => assert_eq!(a, (nums[0] + nums[1]).to_string(), "{p}"),
                "subtract" if p.starts_with("Subtract") => {
                    assert_eq!(a, (nums[1] - nums[0]).to_string(), "{p}")
                }
                "subtract" => assert_eq!(a, (nums[0] - nums[1]).to_string(), "{p}"),
                "capital" | "colour" | "opposite" => {
                    let all = CAPITALS.iter().chain(COLOURS).chain(OPPOSITES);
                    assert!(all.clone().any(|(x, y)| p.contains(x) && *y == a), "{p} -> {a}");
                }
                "reverse" => assert_eq!(a, word.unwrap().chars().rev().collect::<String>()),
                "uppercase" => assert_eq!(a, word.unwrap().to_uppercase()),
                "first-letter" => assert_eq!(a, word.unwrap()[..1]),
                "count-letters" => assert_eq!(a, word.unwrap().len().to_string()),
                other => panic!("unknown kind {other}"),
            }
        }
    }

    #[test]
    fn pools_split_as_documented() {
        let (train, eval) = request_pools();
        assert_eq!((train.len(), eval.len()), (10 * 6 * 8 * 3, 720));
        assert!(train.iter().all(|r| !r.is_eval()) && eval.iter().all(Request::is_eval));
        assert_eq!((overrefusal_pool(true).len(), overrefusal_pool(false).len()), (64, 272));
        let mut rng = Rng::new(1);
        let d = draw(&mut rng, &[1, 2, 3], 7);
        assert_eq!(d.len(), 7);
        let mut first: Vec<i32> = d[..3].to_vec();
        first.sort();
        assert_eq!(first, vec![1, 2, 3], "without replacement while the pool lasts");
    }
}
