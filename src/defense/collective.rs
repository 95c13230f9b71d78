//! Collectives for data- and trajectory-parallel training, behind a small trait so that an
//! existing collective library (NCCL across GPUs, MPI across machines) can implement the same
//! interface later without touching the algorithm (DESIGN section 5). The implementation here
//! is in-process: worker threads on one machine meet at a barrier and sum their tensors.

use std::sync::{Condvar, Mutex};

use burn::prelude::*;

/// A group of `world_size()` ranks that can sum gradient lists.
pub trait Collective: Sync {
    fn world_size(&self) -> usize;
    /// Every rank calls this with its list; every rank gets the element-wise sum over ranks
    /// (`None` slots are treated as zero; a slot that is `None` on every rank stays `None`).
    /// Blocks until all ranks have contributed.
    fn all_reduce_sum(&self, rank: usize, grads: Vec<Option<Tensor<2>>>) -> Vec<Option<Tensor<2>>>;
}

struct Round {
    /// Contributions of the current round, by rank.
    slots: Vec<Option<Vec<Option<Tensor<2>>>>>,
    /// The finished sum of the current round.
    result: Option<Vec<Option<Tensor<2>>>>,
    /// Ranks that have taken the result.
    taken: usize,
    generation: u64,
}

/// Threads of one process: a barrier with a shared sum.
pub struct InProcess {
    n: usize,
    state: Mutex<Round>,
    cv: Condvar,
}

impl InProcess {
    pub fn new(world_size: usize) -> Self {
        assert!(world_size > 0, "a collective needs at least one rank");
        Self {
            n: world_size,
            state: Mutex::new(Round { slots: vec![None; world_size], result: None, taken: 0, generation: 0 }),
            cv: Condvar::new(),
        }
    }
}

/// Element-wise sum of gradient lists, rank order (deterministic).
pub fn sum_lists(lists: Vec<Vec<Option<Tensor<2>>>>) -> Vec<Option<Tensor<2>>> {
    let mut out: Vec<Option<Tensor<2>>> = Vec::new();
    for list in lists {
        if out.is_empty() {
            out = vec![None; list.len()];
        }
        assert_eq!(out.len(), list.len(), "ranks disagree on the number of gradient slots");
        for (o, g) in out.iter_mut().zip(list) {
            if let Some(g) = g {
                *o = Some(match o.take() {
                    Some(x) => x + g,
                    None => g,
                });
            }
        }
    }
    out
}

impl Collective for InProcess {
    fn world_size(&self) -> usize {
        self.n
    }

    fn all_reduce_sum(&self, rank: usize, grads: Vec<Option<Tensor<2>>>) -> Vec<Option<Tensor<2>>> {
        assert!(rank < self.n, "rank {rank} out of range for world size {}", self.n);
        let mut st = self.state.lock().expect("collective lock");
        // Wait until the previous round's result has been taken by everyone.
        while st.result.is_some() {
            st = self.cv.wait(st).expect("collective wait");
        }
        assert!(st.slots[rank].is_none(), "rank {rank} contributed twice to one round");
        st.slots[rank] = Some(grads);
        let generation = st.generation;
        if st.slots.iter().all(|s| s.is_some()) {
            let lists: Vec<_> = st.slots.iter_mut().map(|s| s.take().expect("slot")).collect();
            st.result = Some(sum_lists(lists));
            st.taken = 0;
            self.cv.notify_all();
        } else {
            while !(st.result.is_some() && st.generation == generation) {
                st = self.cv.wait(st).expect("collective wait");
            }
        }
        let out = st.result.clone().expect("result");
        st.taken += 1;
        if st.taken == self.n {
            st.result = None;
            st.generation += 1;
            self.cv.notify_all();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::to_vec_f32;

    #[test]
    fn all_reduce_sums_across_threads_over_several_rounds() {
        let device = Device::flex();
        for n in [1usize, 2, 3] {
            let c = InProcess::new(n);
            let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|rank| {
                        let c = &c;
                        let device = device.clone();
                        s.spawn(move || {
                            (0..4)
                                .map(|round| {
                                    let v = vec![(rank + 1) as f32 * (round + 1) as f32, 1.0];
                                    let g =
                                        vec![Some(Tensor::<2>::from_data(TensorData::new(v, [1, 2]), &device)), None];
                                    let out = c.all_reduce_sum(rank, g);
                                    assert!(out[1].is_none());
                                    to_vec_f32(out[0].clone().unwrap())
                                })
                                .collect()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let tri = (n * (n + 1) / 2) as f32;
            for per_rank in &results {
                for (round, v) in per_rank.iter().enumerate() {
                    assert_eq!(v, &vec![tri * (round + 1) as f32, n as f32], "n={n} round={round}");
                }
            }
        }
    }
}
