//! Llama family (llama, mistral, qwen2, qwen3): RMSNorm, RoPE, SwiGLU MLP, grouped-query
//! attention, optionally sliding-window layers (mistral, qwen2/3) and per-head q/k RMSNorm
//! (qwen3). Field names follow `modeling_llama.py` / `modeling_qwen3.py`.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use super::Visit;
use super::layers::{
    AttentionMask, AttentionMasks, Embedding, KvCache, LayerCache, Linear, RmsNorm, attention,
    dropout, swiglu,
};
use super::rope::Rope;
use super::weights::WeightStore;
use crate::hf::{HfError, LlamaConfig};
use crate::kernels::Kernels;

/// `LlamaAttention`: q/k/v/o projections.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3's RMSNorm over each query head (`[head_dim]` weight), before RoPE.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3's RMSNorm over each key head.
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Dropout on attention probabilities while training (`attention_dropout`).
    pub attention_dropout: f64,
}

/// `LlamaMLP`: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

/// `LlamaDecoderLayer`.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    pub self_attn: LlamaAttention,
    pub mlp: LlamaMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    /// Dropout on the attention and MLP outputs before each residual add, while training.
    pub residual_dropout: f64,
    /// The window of a sliding-attention layer (none: full attention).
    pub sliding_window: Option<usize>,
}

/// `LlamaForCausalLM`: `model.{embed_tokens, layers, norm}` + `lm_head` (absent when tied).
#[derive(Module, Debug)]
pub struct LlamaForCausalLm {
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Option<Linear>,
    pub rope: Rope,
    /// tunelab's kernels or burn's ops (see [`Kernels`]).
    #[module(skip)]
    pub kernels: Kernels,
}

/// Prefix of the body's tensor names in `*ForCausalLM` checkpoints.
pub const PREFIX: &str = "model.";

impl LlamaForCausalLm {
    /// Build from loaded tensors, checking every shape against `cfg`.
    pub fn load(cfg: &LlamaConfig, w: &mut WeightStore) -> Result<Self, HfError> {
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        let (h, kvh, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let hint_attn = format!(
            "hidden_size {d}, num_attention_heads {h}, num_key_value_heads {kvh}, head_dim {hd}"
        );
        let hint_mlp = format!(
            "hidden_size {d}, intermediate_size {}",
            cfg.intermediate_size
        );
        let hint_emb = format!("vocab_size {v}, hidden_size {d}");
        let embed_tokens = Embedding::load(w, "embed_tokens", [v, d], &hint_emb)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("layers.{i}");
            let lin = |w: &mut WeightStore, n: &str, i, o, b, hint: &str| {
                Linear::load(w, &format!("{p}.{n}"), i, o, b, hint)
            };
            let head_norm = |w: &mut WeightStore, n: &str| -> Result<Option<RmsNorm>, HfError> {
                if !cfg.qk_norm {
                    return Ok(None);
                }
                RmsNorm::load(w, &format!("{p}.self_attn.{n}"), hd, cfg.rms_norm_eps).map(Some)
            };
            let self_attn = LlamaAttention {
                q_proj: lin(w, "self_attn.q_proj", d, h * hd, cfg.qkv_bias, &hint_attn)?,
                k_proj: lin(w, "self_attn.k_proj", d, kvh * hd, cfg.qkv_bias, &hint_attn)?,
                v_proj: lin(w, "self_attn.v_proj", d, kvh * hd, cfg.qkv_bias, &hint_attn)?,
                o_proj: lin(w, "self_attn.o_proj", h * hd, d, cfg.o_bias, &hint_attn)?,
                q_norm: head_norm(w, "q_norm")?,
                k_norm: head_norm(w, "k_norm")?,
                num_heads: h,
                num_key_value_heads: kvh,
                head_dim: hd,
                attention_dropout: 0.0,
            };
            let it = cfg.intermediate_size;
            let mlp = LlamaMlp {
                gate_proj: lin(w, "mlp.gate_proj", d, it, cfg.mlp_bias, &hint_mlp)?,
                up_proj: lin(w, "mlp.up_proj", d, it, cfg.mlp_bias, &hint_mlp)?,
                down_proj: lin(w, "mlp.down_proj", it, d, cfg.mlp_bias, &hint_mlp)?,
            };
            layers.push(LlamaDecoderLayer {
                self_attn,
                mlp,
                input_layernorm: rms(w, &format!("{p}.input_layernorm"), cfg)?,
                post_attention_layernorm: rms(w, &format!("{p}.post_attention_layernorm"), cfg)?,
                residual_dropout: 0.0,
                sliding_window: cfg.window_of(i),
            });
        }
        let norm = rms(w, "norm", cfg)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let lm = w.take_exact("lm_head.weight", [v, d], &hint_emb)?;
            Some(Linear::from_weight(lm.transpose(), "lm_head"))
        };
        let rope = Rope::new(
            hd,
            cfg.rope_theta,
            &cfg.rope_scaling,
            cfg.max_position_embeddings,
            &embed_tokens.weight.device(),
        );
        Ok(LlamaForCausalLm {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            kernels: Kernels::default(),
        })
    }

    /// The window of the sliding-attention layers, if any layer slides.
    pub fn sliding_window(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| l.sliding_window)
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm) for `ids` `[batch, seq]`
    /// under additive `masks`; with a cache, `ids` continue the cached positions and their
    /// keys/values are appended.
    pub fn hidden(
        &self,
        ids: Tensor<2, Int>,
        masks: &AttentionMasks,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let start = cache.as_ref().map_or(0, |c| c.len());
        let mut x = self.embed_tokens.forward(ids);
        // The last sublayer's output, added to the residual stream by the next norm's launch.
        let mut delta = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c, i));
            let mask = masks.for_layer(layer.sliding_window);
            let next = layer.forward(x, delta, mask, &self.rope, start, slot, self.kernels);
            (x, delta) = (next.0, Some(next.1));
        }
        self.norm.add_forward(x, delta, self.kernels).1
    }

    /// The LM head: logits `[batch, seq, vocab]` from hidden states.
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(x, self.kernels),
            None => self.embed_tokens.attend(x, self.kernels),
        }
    }

    /// The LM head as a plain `[hidden, vocab]` matrix, or None when it has a bias or an adapter.
    pub fn head_matrix(&self) -> Option<Tensor<2>> {
        match &self.lm_head {
            Some(head) => head.matrix(),
            None => Some(self.embed_tokens.weight.val().transpose()),
        }
    }
}

impl LlamaForCausalLm {
    /// Visit every linear layer with its HF module path.
    pub fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        for l in &mut self.layers {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            for lin in [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ] {
                lin.visit_named(f);
            }
        }
        if let Some(head) = &mut self.lm_head {
            head.visit_named(f);
        }
    }

    /// Visit every parameter that is not inside a linear layer, with its HF name.
    pub fn for_each_other_param(&mut self, f: &mut Visit) {
        self.embed_tokens.visit_named(f);
        for l in &mut self.layers {
            for norm in [&mut l.self_attn.q_norm, &mut l.self_attn.k_norm]
                .into_iter()
                .flatten()
            {
                norm.visit_named(f);
            }
            l.input_layernorm.visit_named(f);
            l.post_attention_layernorm.visit_named(f);
        }
        self.norm.visit_named(f);
    }

    /// Set attention-probability and residual dropout (active only while training).
    pub fn set_dropout(&mut self, attention: f64, residual: f64) {
        for l in &mut self.layers {
            l.self_attn.attention_dropout = attention;
            l.residual_dropout = residual;
        }
    }
}

impl LlamaDecoderLayer {
    /// The layer over the residual stream `x + delta` (the previous layer's MLP output, not yet
    /// added: the add runs in this layer's first norm): the stream after attention and this
    /// layer's MLP output, whose add is left to the next norm in turn.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: Tensor<3>,
        delta: Option<Tensor<3>>,
        mask: AttentionMask,
        rope: &Rope,
        start: usize,
        cache: LayerCache,
        kernels: Kernels,
    ) -> (Tensor<3>, Tensor<3>) {
        let (x, normed) = self.input_layernorm.add_forward(x, delta, kernels);
        let attn = self
            .self_attn
            .forward(normed, mask, rope, start, cache, kernels);
        let (h, normed) = self.post_attention_layernorm.add_forward(
            x,
            Some(dropout(attn, self.residual_dropout)),
            kernels,
        );
        let mlp = self.mlp.forward(normed, kernels);
        (h, dropout(mlp, self.residual_dropout))
    }
}

impl LlamaAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: AttentionMask,
        rope: &Rope,
        start: usize,
        cache: LayerCache,
        kernels: Kernels,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let hd = self.head_dim;
        let heads = |p: &Linear, n: usize, norm: Option<&RmsNorm>| {
            let y = p.forward(x.clone(), kernels);
            let y = match norm {
                // Per head: normalise `[.., head_dim]` rows.
                Some(norm) => norm.forward(y.reshape([b, t * n, hd]), kernels),
                None => y,
            };
            y.reshape([b, t, n, hd])
        };
        // `[b, t, heads, hd]` → `[b, heads, t, hd]`, q and k rotated on the way.
        let q = heads(&self.q_proj, self.num_heads, self.q_norm.as_ref());
        let q = rope.apply(q, start, kernels);
        let k = heads(&self.k_proj, self.num_key_value_heads, self.k_norm.as_ref());
        let k = rope.apply(k, start, kernels);
        let v = heads(&self.v_proj, self.num_key_value_heads, None).swap_dims(1, 2);
        let (k, v) = match cache {
            Some((c, i)) => c.extend(i, k, v),
            None => (k, v),
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let out = attention(q, k, v, mask, scale, self.attention_dropout, kernels);
        self.o_proj.forward(out, kernels)
    }
}

impl LlamaMlp {
    fn forward(&self, x: Tensor<3>, kernels: Kernels) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone(), kernels);
        let up = self.up_proj.forward(x, kernels);
        self.down_proj.forward(swiglu(gate, up, kernels), kernels)
    }
}

fn rms(w: &mut WeightStore, name: &str, cfg: &LlamaConfig) -> Result<RmsNorm, HfError> {
    RmsNorm::load(w, name, cfg.hidden_size, cfg.rms_norm_eps)
}
