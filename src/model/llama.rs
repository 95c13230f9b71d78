//! The Llama-family decoder: Llama 2/3, SmolLM2, Mistral (no sliding window) and Qwen2
//! (q/k/v bias), as in Hugging Face transformers' `modeling_llama.py`; and, on the same
//! parameter list and passes, Gemma 3's text decoder, whose differences (four `1 + w` norms per
//! block, q/k norms, GELU, local and global layers) live in [`crate::model::gemma3`].
//!
//! Design choices:
//! - Pre-norm blocks with RMSNorm (Zhang and Sennrich, 2019), SwiGLU MLP (Shazeer, 2020),
//!   grouped-query attention (Ainslie et al., 2023) and rotary position embeddings
//!   (Su et al., 2021) in the Hugging Face *rotate-half* convention (the head dimension is split
//!   in two halves, not interleaved pairs), with the config's theta.
//! - Parameters are one flat `Vec<Tensor<2>>` in a fixed order named by the Hugging Face
//!   checkpoint keys ([`param_specs`]). 1-D tensors (norms, biases) are stored as `[1, n]`.
//!   Optimizers, checkpoints, the Patcher offsets Δ and all-reduces are then plain maps over
//!   one vector, and a model clone is O(1) (burn tensors are shared, copy-on-write).
//! - The same `forward` serves inference and training: wrap the parameters as autodiff leaves
//!   ([`Llama::tracked`]) and the graph is recorded; otherwise nothing is.
//! - `forward` returns the logits of every position (training needs them all); generation has
//!   its own cached path ([`Llama::forward_cached`]).

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::model::{fixed, gemma3};

use crate::model::config::LlamaConfig;

/// Name and Hugging Face shape of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    /// Shape as stored in a Hugging Face checkpoint: `[out, in]` for linears, `[n]` for norms.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The `[rows, cols]` shape of the tensor held in [`Llama::params`].
    pub fn shape2(&self) -> [usize; 2] {
        match self.shape.as_slice() {
            [n] => [1, *n],
            [r, c] => [*r, *c],
            other => panic!("parameter {} has rank {}", self.name, other.len()),
        }
    }
}

/// What each slot of a layer holds; the order of [`param_specs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    InputNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    PostNorm,
    Gate,
    Up,
    Down,
    /// Gemma 3's per-head q/k norms and the norms around its MLP.
    QNorm,
    KNorm,
    PreFfnNorm,
    PostFfnNorm,
}

fn layer_slots(cfg: &LlamaConfig) -> Vec<Slot> {
    use Slot::*;
    if cfg.gemma.is_some() {
        return vec![InputNorm, Q, K, V, QNorm, KNorm, O, PostNorm, PreFfnNorm, Gate, Up, Down, PostFfnNorm];
    }
    let mut s = vec![InputNorm, Q, K, V];
    if cfg.qkv_bias {
        s.extend([QBias, KBias, VBias]);
    }
    s.extend([O, PostNorm, Gate, Up, Down]);
    s
}

/// Every parameter of the architecture, in storage order: embedding, layers, final norm, head.
pub fn param_specs(cfg: &LlamaConfig) -> Vec<ParamSpec> {
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut out = vec![ParamSpec { name: "model.embed_tokens.weight".into(), shape: vec![cfg.vocab_size, d] }];
    for i in 0..cfg.num_layers {
        for slot in layer_slots(cfg) {
            let (name, shape) = match slot {
                Slot::InputNorm => ("input_layernorm.weight", vec![d]),
                Slot::Q => ("self_attn.q_proj.weight", vec![qd, d]),
                Slot::K => ("self_attn.k_proj.weight", vec![kvd, d]),
                Slot::V => ("self_attn.v_proj.weight", vec![kvd, d]),
                Slot::QBias => ("self_attn.q_proj.bias", vec![qd]),
                Slot::KBias => ("self_attn.k_proj.bias", vec![kvd]),
                Slot::VBias => ("self_attn.v_proj.bias", vec![kvd]),
                Slot::O => ("self_attn.o_proj.weight", vec![d, qd]),
                Slot::PostNorm => ("post_attention_layernorm.weight", vec![d]),
                Slot::Gate => ("mlp.gate_proj.weight", vec![f, d]),
                Slot::Up => ("mlp.up_proj.weight", vec![f, d]),
                Slot::Down => ("mlp.down_proj.weight", vec![d, f]),
                Slot::QNorm => ("self_attn.q_norm.weight", vec![hd]),
                Slot::KNorm => ("self_attn.k_norm.weight", vec![hd]),
                Slot::PreFfnNorm => ("pre_feedforward_layernorm.weight", vec![d]),
                Slot::PostFfnNorm => ("post_feedforward_layernorm.weight", vec![d]),
            };
            out.push(ParamSpec { name: format!("model.layers.{i}.{name}"), shape });
        }
    }
    out.push(ParamSpec { name: "model.norm.weight".into(), shape: vec![d] });
    if !cfg.tie_word_embeddings {
        out.push(ParamSpec { name: "lm_head.weight".into(), shape: vec![cfg.vocab_size, d] });
    }
    out
}

/// A Llama-family decoder: its configuration and its parameters (see [`param_specs`]).
#[derive(Debug, Clone)]
pub struct Llama {
    pub cfg: Arc<LlamaConfig>,
    pub params: Vec<Tensor<2>>,
}

/// Per-layer key/value cache for generation: `k`, `v` are `[B, KV, S, hd]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of batch rows `rows` (`[R]` indices, repeats allowed), in that order: every
    /// layer's `k`, `v` become `[R, KV, S, hd]`.
    pub fn select_rows(&self, rows: &Tensor<1, Int>) -> Self {
        let pick = |t: &Tensor<4>| t.clone().select(0, rows.clone());
        Self { layers: self.layers.iter().map(|l| l.as_ref().map(|(k, v)| (pick(k), pick(v)))).collect() }
    }
}

/// One decoder layer's weights, a typed view over [`Llama::params`] (the order of
/// [`param_specs`]): the forward reads like the architecture while optimizers, checkpoints and
/// Patcher's offsets keep working on the flat list.
pub struct LayerWeights<'a> {
    pub input_norm: &'a Tensor<2>,
    pub q: &'a Tensor<2>,
    pub k: &'a Tensor<2>,
    pub v: &'a Tensor<2>,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: Option<[&'a Tensor<2>; 3]>,
    /// Per-head q and k norms (Gemma 3).
    pub qk_norm: Option<[&'a Tensor<2>; 2]>,
    pub o: &'a Tensor<2>,
    /// `post_attention_layernorm`: before the MLP (Llama), on the attention output (Gemma 3).
    pub post_norm: &'a Tensor<2>,
    /// The norms before and after the MLP (Gemma 3).
    pub ffn_norms: Option<[&'a Tensor<2>; 2]>,
    pub gate: &'a Tensor<2>,
    pub up: &'a Tensor<2>,
    pub down: &'a Tensor<2>,
}

/// Access to the residual stream of a forward pass ([`Llama::hidden_probed`]).
#[derive(Debug, Default)]
pub struct Probe {
    /// Added to layer `l`'s output when `Some` (`[B, T, d]`, e.g. Vaccine's perturbation).
    pub add: Vec<Option<Tensor<3>>>,
    /// Keep every layer's output in `layers`.
    pub keep: bool,
    /// Layer outputs `[B, T, d]` in layer order (filled when `keep`).
    pub layers: Vec<Tensor<3>>,
}

impl Probe {
    /// A probe that keeps every layer's output and adds nothing.
    pub fn keeping() -> Self {
        Self { keep: true, ..Self::default() }
    }
}

/// A float tensor of `data` in `shape`, on the device and in the dtype of `like`.
pub fn float_like<const D: usize>(data: Vec<f32>, shape: [usize; D], like: &Tensor<2>) -> Tensor<D> {
    let device = like.device().without_autodiff();
    Tensor::<D>::from_data(TensorData::new(data, shape), (&device, like.dtype()))
}

/// The values of a float tensor as `f32` (any dtype, autodiff or not).
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().into_data().convert::<f32>().try_into_vec::<f32>().expect("float tensor data")
}

pub fn int_tensor<const D: usize>(data: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::<D, Int>::from_data(TensorData::new(data, shape), &device.clone().without_autodiff())
}

impl Llama {
    /// A model from parameters in [`param_specs`] order; checks count and shapes.
    pub fn new(cfg: LlamaConfig, params: Vec<Tensor<2>>) -> Self {
        let specs = param_specs(&cfg);
        assert_eq!(specs.len(), params.len(), "parameter count mismatch");
        for (s, p) in specs.iter().zip(&params) {
            assert_eq!(p.dims(), s.shape2(), "shape of {}", s.name);
        }
        Self { cfg: Arc::new(cfg), params }
    }

    /// A randomly initialised model (normal(0, std) matrices, unit norms, zero biases), seeded.
    pub fn init(cfg: LlamaConfig, std: f64, seed: u64, device: &Device) -> Self {
        let mut rng = crate::rng::Rng::derive(seed, "init");
        let params = param_specs(&cfg)
            .iter()
            .map(|s| {
                let n = s.numel();
                let data: Vec<f32> = if s.name.ends_with("norm.weight") {
                    // Gemma's norms multiply by (1 + w).
                    vec![if cfg.gemma.is_some() { 0.0 } else { 1.0 }; n]
                } else if s.name.ends_with(".bias") {
                    vec![0.0; n]
                } else {
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                };
                Tensor::<2>::from_data(TensorData::new(data, s.shape2()), device)
            })
            .collect();
        Self::new(cfg, params)
    }

    pub fn specs(&self) -> Vec<ParamSpec> {
        param_specs(&self.cfg)
    }

    pub fn device(&self) -> Device {
        self.params[0].device()
    }

    /// The same weights as autodiff leaves that record a graph and keep their gradients.
    pub fn tracked(&self) -> Self {
        let params = self.params.iter().map(|p| p.clone().inner().autodiff().require_grad()).collect();
        Self { cfg: self.cfg.clone(), params }
    }

    /// The same weights without autodiff (drops any graph).
    pub fn untracked(&self) -> Self {
        Self { cfg: self.cfg.clone(), params: self.params.iter().map(|p| p.clone().inner()).collect() }
    }

    fn per_layer(&self) -> usize {
        layer_slots(&self.cfg).len()
    }

    /// The weights of layer `layer`.
    pub fn layer(&self, layer: usize) -> LayerWeights<'_> {
        let slots = layer_slots(&self.cfg);
        let p = &self.params[1 + layer * slots.len()..1 + (layer + 1) * slots.len()];
        let get = |slot: Slot| slots.iter().position(|s| *s == slot).map(|i| &p[i]);
        let one = |slot: Slot| get(slot).expect("every architecture has this slot");
        let qkv_bias = match (get(Slot::QBias), get(Slot::KBias), get(Slot::VBias)) {
            (Some(q), Some(k), Some(v)) => Some([q, k, v]),
            _ => None,
        };
        let pair = |a: Slot, b: Slot| get(a).zip(get(b)).map(|(a, b)| [a, b]);
        LayerWeights {
            input_norm: one(Slot::InputNorm),
            q: one(Slot::Q),
            k: one(Slot::K),
            v: one(Slot::V),
            qkv_bias,
            qk_norm: pair(Slot::QNorm, Slot::KNorm),
            o: one(Slot::O),
            post_norm: one(Slot::PostNorm),
            ffn_norms: pair(Slot::PreFfnNorm, Slot::PostFfnNorm),
            gate: one(Slot::Gate),
            up: one(Slot::Up),
            down: one(Slot::Down),
        }
    }

    fn embed(&self) -> Tensor<2> {
        self.params[0].clone()
    }

    fn final_norm(&self) -> Tensor<2> {
        self.params[1 + self.cfg.num_layers * self.per_layer()].clone()
    }

    fn head(&self) -> Tensor<2> {
        if self.cfg.tie_word_embeddings { self.embed() } else { self.params.last().expect("head").clone() }
    }

    /// cos/sin tables `[B, 1, T, hd]` for the given positions (rotate-half layout: the
    /// frequencies repeated over both halves of the head dimension).
    fn rope_tables(&self, positions: &[Vec<usize>], theta: f64) -> (Tensor<4>, Tensor<4>) {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        let (b, t) = (positions.len(), positions[0].len());
        let inv: Vec<f64> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / hd as f64)).collect();
        let mut cos = Vec::with_capacity(b * t * hd);
        let mut sin = Vec::with_capacity(b * t * hd);
        for row in positions {
            for &p in row {
                for rep in 0..2 {
                    let _ = rep;
                    for f in &inv {
                        // HF computes the angle in f32: (position * inv_freq) as f32.
                        let angle = (p as f32) * (*f as f32);
                        cos.push(angle.cos());
                        sin.push(angle.sin());
                    }
                }
            }
        }
        let like = &self.params[0];
        (float_like(cos, [b, 1, t, hd], like), float_like(sin, [b, 1, t, hd], like))
    }

    /// Logits of every position. `ids`: `[B, T]`; causal attention, positions 0..T.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.full_sequence(ids, true)
    }

    /// Uncached causal pass over whole sequences at positions 0..T, with or without the head.
    fn full_sequence(&self, ids: Tensor<2, Int>, with_head: bool) -> Tensor<3> {
        self.full_sequence_probed(ids, with_head, None)
    }

    fn full_sequence_probed(&self, ids: Tensor<2, Int>, with_head: bool, probe: Option<&mut Probe>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let positions = vec![(0..t).collect::<Vec<_>>(); b];
        self.run_inner(ids, &positions, &vec![vec![true; t]; b], &mut None, with_head, probe)
    }

    /// As [`Llama::hidden`], through `probe`: each decoder layer's output (the residual stream
    /// after layer `l`, `[B, T, d]`) gets `probe.add[l]` added when given, and is kept in
    /// `probe.layers` when `probe.keep` (the defenses that act on representations: RepNoise,
    /// Vaccine, TAR's retain term).
    pub fn hidden_probed(&self, ids: Tensor<2, Int>, probe: &mut Probe) -> Tensor<3> {
        self.full_sequence_probed(ids, false, Some(probe))
    }

    /// Cached forward for generation: `ids` `[B, T]` are new tokens at `positions`;
    /// `key_valid[b][s]` says whether cached-or-new key `s` of row `b` is real (not padding).
    /// Returns the logits of every new position `[B, T, V]` and extends `cache`.
    pub fn forward_cached(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        key_valid: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        self.cached(ids, positions, key_valid, cache, true)
    }

    /// As [`Llama::forward_cached`], returning final hidden states `[B, T, d]` instead of logits.
    pub fn forward_cached_hidden(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        key_valid: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        self.cached(ids, positions, key_valid, cache, false)
    }

    fn cached(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        key_valid: &[Vec<bool>],
        cache: &mut KvCache,
        with_head: bool,
    ) -> Tensor<3> {
        if cache.layers.is_empty() {
            cache.layers = vec![None; self.cfg.num_layers];
        }
        let mut c = Some(std::mem::take(cache));
        let out = self.run_inner(ids, positions, key_valid, &mut c, with_head, None);
        *cache = c.expect("cache");
        out
    }

    /// The decoder over new tokens `ids` `[B, T]` at `positions`, attending to the cached and
    /// new keys that `key_valid` marks real.
    fn run_inner(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        key_valid: &[Vec<bool>],
        cache: &mut Option<KvCache>,
        with_head: bool,
        mut probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let cfg = &self.cfg;
        let [b, t] = ids.dims();
        let d = cfg.hidden_size;
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let s = past + t;
        let like = &self.params[0];
        let global = self.rope_tables(positions, cfg.rope_theta);
        let mask = float_like(causal_mask(key_valid, t, past), [b, 1, t, s], like); // (B, 1, T, S)
        // Gemma 3's sliding layers: their own rotary base and a windowed mask.
        let local = cfg.gemma.as_ref().filter(|g| g.sliding.iter().any(|s| *s)).map(|g| {
            let (cos, sin) = self.rope_tables(positions, g.rope_local_theta);
            let m = gemma3::sliding_mask(key_valid, t, past, g.sliding_window);
            (cos, sin, float_like(m, [b, 1, t, s], like)) // (B, 1, T, S)
        });
        let ids = ids.to_device(&self.device().without_autodiff());
        let mut x = self.embed().select(0, ids.reshape([b * t])).reshape([b, t, d]); // (B, T, d)
        if cfg.gemma.is_some() {
            x = x.mul_scalar((d as f64).sqrt() as f32); // Gemma's embedding scale, rounded to f32
        }
        let eps = cfg.rms_norm_eps;
        for layer in 0..cfg.num_layers {
            let w = self.layer(layer);
            let kv = cache.as_mut().map(|c| &mut c.layers[layer]);
            match &cfg.gemma {
                None => {
                    let h = rms_norm(x.clone(), w.input_norm.clone(), eps);
                    x = x + self.attention(&w, h, &global.0, &global.1, &mask, kv); // (B, T, d)
                    let h = rms_norm(x.clone(), w.post_norm.clone(), eps);
                    x = x + mlp(&w, h);
                }
                Some(g) => {
                    let (cos, sin, mask) = match &local {
                        Some((c, s, m)) if g.sliding[layer] => (c, s, m),
                        _ => (&global.0, &global.1, &mask),
                    };
                    let [pre_ffn, post_ffn] = w.ffn_norms.expect("Gemma 3 layers have MLP norms");
                    let h = gemma3::norm(x.clone(), w.input_norm, eps);
                    let a = self.attention(&w, h, cos, sin, mask, kv); // (B, T, d)
                    x = x + gemma3::norm(a, w.post_norm, eps);
                    let h = gemma3::norm(x.clone(), pre_ffn, eps);
                    x = x + gemma3::norm(gemma3::mlp(w.gate, w.up, w.down, h), post_ffn, eps);
                }
            }
            if let Some(p) = probe.as_deref_mut() {
                if let Some(Some(e)) = p.add.get(layer) {
                    x = x + e.clone(); // (B, T, d)
                }
                if p.keep {
                    p.layers.push(x.clone());
                }
            }
        }
        let x = self.apply_final_norm(x);
        if !with_head {
            return x; // (B, T, d)
        }
        let v = cfg.vocab_size;
        linear(x, self.head()).reshape([b, t, v]) // (B, T, V)
    }

    /// The model's final norm on residual-stream states `x` `[B, T, d]` (the logit lens reads
    /// every layer through it).
    pub fn apply_final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        match self.cfg.gemma {
            None => rms_norm(x, self.final_norm(), self.cfg.rms_norm_eps),
            Some(_) => gemma3::norm(x, &self.final_norm(), self.cfg.rms_norm_eps),
        }
    }

    /// Final hidden states `[B, T, d]` (after the last norm, before the head): losses that need
    /// only some positions apply [`Llama::head_weight`] to those rows alone, which saves most
    /// of the `d x V` head matmul and the log-softmax when the vocabulary is large.
    pub fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.full_sequence(ids, false)
    }

    /// The output projection `[V, d]` (the embedding when tied).
    pub fn head_weight(&self) -> Tensor<2> {
        self.head()
    }

    fn attention(
        &self,
        w: &LayerWeights,
        h: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let cfg = &self.cfg;
        let [b, t, d] = h.dims();
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let mut q = linear(h.clone(), w.q.clone()); // (B, T, nh*hd)
        let mut k = linear(h.clone(), w.k.clone()); // (B, T, nkv*hd)
        let mut v = linear(h, w.v.clone());
        if let Some([qb, kb, vb]) = w.qkv_bias {
            q = q + qb.clone().unsqueeze::<3>();
            k = k + kb.clone().unsqueeze::<3>();
            v = v + vb.clone().unsqueeze::<3>();
        }
        if let Some([qn, kn]) = w.qk_norm {
            q = gemma3::head_norm(q, qn, cfg.rms_norm_eps); // (B, T, nh*hd)
            k = gemma3::head_norm(k, kn, cfg.rms_norm_eps); // (B, T, nkv*hd)
        }
        let q = q.reshape([b, t, nh, hd]).swap_dims(1, 2); // (B, nh, T, hd)
        let k = k.reshape([b, t, nkv, hd]).swap_dims(1, 2); // (B, nkv, T, hd)
        let v = v.reshape([b, t, nkv, hd]).swap_dims(1, 2); // (B, nkv, T, hd)
        let q = apply_rope(q, cos, sin);
        let mut k = apply_rope(k, cos, sin);
        let mut v = v;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2); // (B, nkv, S, hd)
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let s = k.dims()[2];
        let g = nh / nkv;
        // Grouped-query attention: kv head j serves query heads j*g .. (j+1)*g. Those g heads'
        // queries are stacked as g*T rows against kv head j's keys, so the keys and values are
        // never copied g times (the cache would be, every generated token).
        let q = q.reshape([b, nkv, g * t, hd]); // (B, KV, g*T, hd)
        let mask = if g == 1 {
            mask.clone()
        } else {
            mask.clone().unsqueeze_dim::<5>(2).expand([b, 1, g, t, s]).reshape([b, 1, g * t, s]) // (B, 1, g*T, S)
        };
        let scale = (cfg.gemma.as_ref().map(|g| g.query_pre_attn_scalar).unwrap_or(hd) as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar(scale) + mask; // (B, KV, g*T, S)
        let probs = fixed::softmax(scores); // over the keys
        let out = probs.matmul(v).reshape([b, nh, t, hd]); // (B, nh, T, hd)
        let out = out.swap_dims(1, 2).reshape([b, t, nh * hd]);
        let _ = d;
        linear(out, w.o.clone())
    }
}

/// SwiGLU MLP: `down(silu(gate(h)) * up(h))`.
fn mlp(w: &LayerWeights, h: Tensor<3>) -> Tensor<3> {
    let gate = linear(h.clone(), w.gate.clone()); // (B, T, f)
    let up = linear(h, w.up.clone()); // (B, T, f)
    linear(silu(gate) * up, w.down.clone()) // (B, T, d)
}

/// `x @ w.T` for `x` `[B, T, in]` and a Hugging Face weight `w` `[out, in]`.
pub fn linear(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let o = w.dims()[0];
    x.reshape([b * t, i]).matmul(w.transpose()).reshape([b, t, o])
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * w`, `w` stored `[1, d]`.
pub fn rms_norm(x: Tensor<3>, w: Tensor<2>, eps: f64) -> Tensor<3> {
    if fixed::fixed_order() {
        return fixed::rms_norm(x, w, eps);
    }
    let inv = x.clone().square().mean_dim(2).add_scalar(eps).sqrt().recip(); // (B, T, 1)
    x * inv * w.unsqueeze::<3>()
}

/// Hugging Face rotary embedding: `x*cos + rotate_half(x)*sin`, rotate_half = `cat(-x2, x1)`.
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let hd = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rot = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rot * sin.clone()
}

/// Additive attention mask `[B, 1, T, S]` flattened: 0 where query `t` (at absolute index
/// `past + t`) may see key `s` (causal and `key_valid`), a large negative number elsewhere.
/// A finite value (not -inf) keeps fully masked padding rows finite.
fn causal_mask(key_valid: &[Vec<bool>], t: usize, past: usize) -> Vec<f32> {
    let s = past + t;
    let mut m = Vec::with_capacity(key_valid.len() * t * s);
    for row in key_valid {
        assert_eq!(row.len(), s, "key_valid must cover cached + new keys: {} != {s}", row.len());
        for q in 0..t {
            for (k, valid) in row.iter().enumerate() {
                m.push(if k <= past + q && *valid { 0.0 } else { -1e9 });
            }
        }
    }
    m
}

/// Token-level cross-entropy averaged over the positions where `weights` > 0.
/// `logits` `[B, T, V]`, `targets` `[B, T]`, `weights` `[B, T]` (0/1 for assistant tokens).
/// Returns a one-element tensor (differentiable when `logits` is).
pub fn masked_cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>, weights: Tensor<2>) -> Tensor<1> {
    let [b, t, _v] = logits.dims();
    let logp = fixed::log_softmax(logits); // (B, T, V)
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]); // (B, T)
    let denom = fixed::sum(weights.clone()).clamp_min(1.0);
    fixed::sum(picked * weights).neg() / denom
}
