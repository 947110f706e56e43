//! Building blocks shared by the model families, named and laid out as in Hugging Face.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor};

use super::weights::WeightStore;
use super::{ParamMut, Visit};
use crate::hf::HfError;
use crate::kernels::Kernels;

/// A dense layer. `weight` is stored `[in, out]` (burn's matmul layout); HF `nn.Linear`
/// checkpoints (`[out, in]`) are transposed on load, GPT-2's `Conv1D` (`[in, out]`) is not.
/// An optional LoRA adapter adds `scaling · dropout(x) A B` to the output.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub lora: Option<Lora>,
    /// True for GPT-2's `Conv1D`, whose checkpoint layout is already `[in, out]`.
    pub conv1d: bool,
    /// Hugging Face module path (`model.layers.0.self_attn.q_proj`), recorded at load.
    pub path: String,
}

/// A LoRA adapter on one [`Linear`]: `ΔW = scaling · A B` in our `[in, out]` layout, i.e. PEFT's
/// `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]` transposed.
#[derive(Module, Debug)]
pub struct Lora {
    /// `[in, r]` (PEFT `lora_A.weight` transposed).
    pub a: Param<Tensor<2>>,
    /// `[r, out]` (PEFT `lora_B.weight` transposed).
    pub b: Param<Tensor<2>>,
    pub scaling: f64,
    pub dropout: f64,
}

impl Linear {
    /// Load an `nn.Linear` (`weight` `[out, in]`).
    pub fn load(
        w: &mut WeightStore,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        hint: &str,
    ) -> Result<Self, HfError> {
        let weight = w.take(&format!("{name}.weight"), [d_out, d_in], hint)?;
        Self::finish(w, name, weight.transpose(), d_out, bias, hint)
    }

    /// Load a GPT-2 `Conv1D` (`weight` `[in, out]`, always with bias).
    pub fn load_conv1d(
        w: &mut WeightStore,
        name: &str,
        d_in: usize,
        d_out: usize,
        hint: &str,
    ) -> Result<Self, HfError> {
        let weight = w.take(&format!("{name}.weight"), [d_in, d_out], hint)?;
        let mut layer = Self::finish(w, name, weight, d_out, true, hint)?;
        layer.conv1d = true;
        Ok(layer)
    }

    fn finish(
        w: &mut WeightStore,
        name: &str,
        weight: Tensor<2>,
        d_out: usize,
        bias: bool,
        hint: &str,
    ) -> Result<Self, HfError> {
        let bias = if bias {
            Some(w.param(&format!("{name}.bias"), [d_out], hint)?)
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
            lora: None,
            conv1d: false,
            path: w.path(name),
        })
    }

    /// A bias-free layer from a `[in, out]` weight (e.g. an untied LM head) at HF path `path`.
    pub fn from_weight(weight: Tensor<2>, path: &str) -> Self {
        Linear {
            weight: Param::from_tensor(weight),
            bias: None,
            lora: None,
            conv1d: false,
            path: path.to_string(),
        }
    }

    /// Call `f` with this layer and its HF module path.
    pub fn visit_named(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        let path = self.path.clone();
        f(&path, self);
    }

    /// Input and output sizes.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.shape().dims()
    }

    /// The layer as a plain `[in, out]` matrix: None when it has a bias or an adapter.
    pub fn matrix(&self) -> Option<Tensor<2>> {
        (self.bias.is_none() && self.lora.is_none()).then(|| self.weight.val())
    }

    /// `x @ W + b (+ (scaling · dropout(x) @ A) @ B)` over the last dimension, the products with
    /// tunelab's tiled matmul where `kernels` and the device allow (with an adapter, the base and
    /// the adapter's products fused: [`crate::kernels::lora_linear`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>, kernels: Kernels) -> Tensor<D> {
        let bias = |y: Tensor<D>| match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        };
        let Some(l) = &self.lora else {
            return bias(product(x, self.weight.val(), kernels));
        };
        let xd = dropped(&x, l.dropout);
        let (a, b) = (l.a.val(), l.b.val());
        let fused = (kernels == Kernels::Tunelab)
            .then(|| {
                let w = self.weight.val();
                crate::kernels::lora_linear(
                    x.clone(),
                    xd.clone(),
                    w,
                    a.clone(),
                    b.clone(),
                    l.scaling,
                )
            })
            .flatten();
        if let Some(y) = fused {
            return bias(y);
        }
        // The scaling is applied to the rank-r activations, not to the output: one pass over
        // `[tokens, r]` instead of `[tokens, out]`, forward and backward.
        let xd = xd.unwrap_or_else(|| x.clone());
        let y = bias(product(x, self.weight.val(), kernels));
        let h = product(xd, a, kernels).mul_scalar(l.scaling);
        y + product(h, b, kernels)
    }
}

/// `x @ w` over the last dimension of `x`: tunelab's tiled matmul where it applies, else burn's
/// (on an f32 copy of `w` if it is stored in f16).
fn product<const D: usize>(x: Tensor<D>, w: Tensor<2>, kernels: Kernels) -> Tensor<D> {
    let tiled = (kernels == Kernels::Tunelab)
        .then(|| crate::kernels::linear(x.clone(), w.clone()))
        .flatten();
    tiled.unwrap_or_else(|| burn::tensor::module::linear(x, w.cast(FloatDType::F32), None))
}

/// Inverted dropout with keep-probability `1 - p`; active only while gradients are tracked
/// (training), as in PyTorch's train mode.
pub fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    dropped(&x, p).unwrap_or(x)
}

/// [`dropout`] of `x`, or None where it does nothing (`p` = 0, not training).
fn dropped<const D: usize>(x: &Tensor<D>, p: f64) -> Option<Tensor<D>> {
    if p <= 0.0 || !x.device().is_autodiff() {
        return None;
    }
    let keep = x.random_like(burn::tensor::Distribution::Bernoulli(1.0 - p));
    Some((x.clone() * keep).div_scalar(1.0 - p))
}

/// Token (or position) embedding table `[num, dim]`.
#[derive(Module, Debug)]
pub struct Embedding {
    pub weight: Param<Tensor<2>>,
    /// Hugging Face module path (`model.embed_tokens`), recorded at load.
    pub path: String,
}

impl Embedding {
    /// Load `{name}.weight` `[num, dim]`.
    pub fn load(
        w: &mut WeightStore,
        name: &str,
        shape: [usize; 2],
        hint: &str,
    ) -> Result<Self, HfError> {
        Ok(Embedding {
            weight: w.param(&format!("{name}.weight"), shape, hint)?,
            path: w.path(name),
        })
    }

    /// Call `f` with the table and its HF tensor name.
    pub fn visit_named(&mut self, f: &mut Visit) {
        f(
            &format!("{}.weight", self.path),
            ParamMut::Matrix(&mut self.weight, false),
        );
    }

    /// Look up `ids` `[batch, seq]` → `[batch, seq, dim]`, in f32 whatever the table's storage.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.val(), ids).cast(FloatDType::F32)
    }

    /// Use the table as an output projection (tied LM head): `x @ Wᵀ`.
    pub fn attend(&self, x: Tensor<3>, kernels: Kernels) -> Tensor<3> {
        product(x, self.weight.val().transpose(), kernels)
    }
}

/// Llama's RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
    /// Hugging Face module path, recorded at load.
    pub path: String,
}

impl RmsNorm {
    /// Load `{name}.weight` `[dim]`.
    pub fn load(w: &mut WeightStore, name: &str, dim: usize, eps: f64) -> Result<Self, HfError> {
        Ok(RmsNorm {
            weight: w.param(
                &format!("{name}.weight"),
                [dim],
                &format!("hidden_size {dim}"),
            )?,
            eps,
            path: w.path(name),
        })
    }

    /// Call `f` with the weight and its HF tensor name.
    pub fn visit_named(&mut self, f: &mut Visit) {
        f(
            &format!("{}.weight", self.path),
            ParamMut::Vector(&mut self.weight),
        );
    }

    /// Normalize over the last dimension: with [`Kernels::Tunelab`] on a GPU one fused kernel
    /// (one float a row kept for backward), otherwise burn's ops.
    pub fn forward(&self, x: Tensor<3>, kernels: Kernels) -> Tensor<3> {
        if kernels == Kernels::Tunelab
            && let Some(y) = crate::kernels::rms_norm(x.clone(), self.weight.val(), self.eps)
        {
            return y;
        }
        let rms = (x.clone().square().mean_dim(2) + self.eps).sqrt();
        (x / rms) * self.weight.val().unsqueeze::<3>()
    }

    /// The residual stream `h = x + delta` (`x` without `delta`) and the norm of `h`: with
    /// tunelab's kernels the add is fused into the norm's launch.
    pub fn add_forward(
        &self,
        x: Tensor<3>,
        delta: Option<Tensor<3>>,
        kernels: Kernels,
    ) -> (Tensor<3>, Tensor<3>) {
        let Some(delta) = delta else {
            return (x.clone(), self.forward(x, kernels));
        };
        if kernels == Kernels::Tunelab
            && let Some(fused) =
                crate::kernels::add_rms_norm(x.clone(), delta.clone(), self.weight.val(), self.eps)
        {
            return fused;
        }
        let h = x + delta;
        (h.clone(), self.forward(h, kernels))
    }
}

/// GPT-2's LayerNorm with affine weight and bias.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
    /// Hugging Face module path, recorded at load.
    pub path: String,
}

impl LayerNorm {
    /// Load `{name}.weight` and `{name}.bias` `[dim]`.
    pub fn load(w: &mut WeightStore, name: &str, dim: usize, eps: f64) -> Result<Self, HfError> {
        let hint = format!("n_embd {dim}");
        Ok(LayerNorm {
            weight: w.param(&format!("{name}.weight"), [dim], &hint)?,
            bias: w.param(&format!("{name}.bias"), [dim], &hint)?,
            eps,
            path: w.path(name),
        })
    }

    /// Call `f` with the weight and bias and their HF tensor names.
    pub fn visit_named(&mut self, f: &mut Visit) {
        f(
            &format!("{}.weight", self.path),
            ParamMut::Vector(&mut self.weight),
        );
        f(
            &format!("{}.bias", self.path),
            ParamMut::Vector(&mut self.bias),
        );
    }

    /// Normalize over the last dimension (biased variance, as PyTorch).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let x = (x - mean) / (var + self.eps).sqrt();
        x * self.weight.val().unsqueeze::<3>() + self.bias.val().unsqueeze::<3>()
    }
}

/// Activation functions by their Hugging Face names.
pub fn activation(name: &str, x: Tensor<3>) -> Tensor<3> {
    match name {
        "gelu_new" | "gelu_pytorch_tanh" => gelu_approximate(x),
        "gelu" => gelu(x),
        "relu" => relu(x),
        _ => silu(x),
    }
}

/// Llama's gated activation `silu(gate) · up`: one fused kernel where `kernels` and the device
/// allow ([`crate::kernels::swiglu`]), burn's ops otherwise.
pub fn swiglu(gate: Tensor<3>, up: Tensor<3>, kernels: Kernels) -> Tensor<3> {
    let fused = (kernels == Kernels::Tunelab)
        .then(|| crate::kernels::swiglu(gate.clone(), up.clone()))
        .flatten();
    fused.unwrap_or_else(|| silu(gate) * up)
}

/// An additive attention mask `[batch, 1, q_len, kv_len]`.
#[derive(Clone, Debug)]
pub struct AttentionMask {
    pub additive: Tensor<4>,
    /// Every key after a query's position is masked (queries being the last `q_len` of the
    /// `kv_len` positions): the fused kernel skips those keys.
    pub causal: bool,
}

/// The additive attention masks of one forward pass: causal over every earlier position, and
/// (when the model has sliding-window layers and the keys outrun the window) causal over the
/// window only.
pub struct AttentionMasks {
    pub full: AttentionMask,
    pub sliding: Option<AttentionMask>,
}

impl AttentionMasks {
    /// Masks `[batch, 1, q_len, kv_len]`: 0 where a query may attend, a large negative number
    /// where the key is in the future, is padding, or (sliding) lies `window` or more positions
    /// back (transformers' `kv_idx > q_idx - sliding_window`).
    ///
    /// `padding` is `[batch, kv_len]` with true for real tokens; queries are the last `q_len`
    /// positions of the `kv_len` keys (so a KV cache can reuse it).
    pub fn new(
        padding: Option<Tensor<2, Bool>>,
        batch: usize,
        q_len: usize,
        kv_len: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Self {
        let offset = (kv_len - q_len) as i64;
        // true where the key lies after the query (outside the shifted lower triangle)
        let future = Tensor::<2, Bool>::tril_mask([q_len, kv_len], offset, device);
        let mut masked = future.unsqueeze::<4>().expand([batch, 1, q_len, kv_len]);
        if let Some(p) = padding {
            let pad = p
                .bool_not()
                .reshape([batch, 1, 1, kv_len])
                .expand([batch, 1, q_len, kv_len]);
            masked = masked.bool_or(pad);
        }
        let additive = |m: Tensor<4, Bool>| AttentionMask {
            additive: Tensor::<4>::zeros([batch, 1, q_len, kv_len], device).mask_fill(m, MASKED),
            causal: true,
        };
        // A window as long as the keys masks nothing more than causality does.
        let sliding = window.filter(|&w| w < kv_len).map(|w| {
            // true where key j is at least `w` positions before query i (j < i + offset - w + 1)
            let old = Tensor::<2, Bool>::triu_mask([q_len, kv_len], offset - w as i64 + 1, device);
            additive(
                masked
                    .clone()
                    .bool_or(old.unsqueeze::<4>().expand([batch, 1, q_len, kv_len])),
            )
        });
        AttentionMasks {
            full: additive(masked),
            sliding,
        }
    }

    /// The mask of a layer with sliding window `window` (none: full attention).
    pub fn for_layer(&self, window: Option<usize>) -> AttentionMask {
        match (window, &self.sliding) {
            (Some(_), Some(m)) => m.clone(),
            _ => self.full.clone(),
        }
    }
}

/// Keys and values of the positions seen so far, per layer (`[batch, kv_heads, len, head_dim]`),
/// so generation feeds only the new token instead of the whole sequence.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append this step's keys and values for `layer` and return all of them.
    pub fn extend(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// A layer's view of the cache: the cache and the layer's index in it.
pub type LayerCache<'a> = Option<(&'a mut KvCache, usize)>;

/// Score given to masked positions (exp underflows to exactly 0 in f32).
const MASKED: f32 = -1.0e9;

/// Scaled dot-product attention with grouped-query heads.
///
/// `q`: `[batch, heads, q_len, head_dim]`, `k`/`v`: `[batch, kv_heads, kv_len, head_dim]`,
/// `mask`: additive `[batch, 1, q_len, kv_len]` (see [`AttentionMask`]); `p_drop`: dropout on the attention
/// probabilities while training. Returns `[batch, q_len, heads * head_dim]`.
///
/// With [`Kernels::Tunelab`] on a GPU, tunelab's fused kernel runs (no
/// `[batch, heads, q_len, kv_len]` tensors; dropout drawn in the kernel from
/// [`crate::kernels::next_dropout_seed`]); otherwise burn's ops.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: AttentionMask,
    scale: f64,
    p_drop: f64,
    kernels: Kernels,
) -> Tensor<3> {
    let [b, h, t, d] = q.dims();
    if kernels == Kernels::Tunelab {
        // Dropout only while training, as `dropout`.
        let training = p_drop > 0.0 && q.device().is_autodiff();
        let fused = crate::kernels::fused_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask.additive.clone(),
            scale,
            mask.causal,
            training.then(|| (p_drop, crate::kernels::next_dropout_seed())),
        );
        if let Some(out) = fused {
            return out.swap_dims(1, 2).reshape([b, t, h * d]);
        }
    }
    let kvh = k.dims()[1];
    let (k, v) = (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh));
    // The scale goes on q (`[.., T, head_dim]`) rather than on the `[.., T, T]` scores: one
    // pass over a tensor T / head_dim times smaller, forward and backward.
    let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3)) + mask.additive;
    let probs = dropout(softmax(scores, 3), p_drop);
    probs.matmul(v).swap_dims(1, 2).reshape([b, t, h * d])
}

/// Repeat each key/value head `n_rep` times, as HF's `repeat_kv` (head `i` serves query heads
/// `i*n_rep .. (i+1)*n_rep`).
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, n_rep, s, d])
        .reshape([b, kvh * n_rep, s, d])
}
