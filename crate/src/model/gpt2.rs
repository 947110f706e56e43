//! GPT-2: learned positions, LayerNorm, `gelu_new`, fused `c_attn` Conv1D weights (stored
//! `[in, out]`, i.e. transposed relative to `nn.Linear`). Field names follow `modeling_gpt2.py`.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use super::Visit;
use super::layers::{
    AttentionMask, Embedding, KvCache, LayerCache, LayerNorm, Linear, activation, attention,
    dropout,
};
use super::weights::WeightStore;
use crate::hf::{Gpt2Config, HfError};
use crate::kernels::Kernels;

/// `GPT2Attention`: fused q/k/v projection `c_attn` and output `c_proj`.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    pub c_attn: Linear,
    pub c_proj: Linear,
    pub num_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    /// Dropout on attention probabilities while training (`attn_pdrop`).
    pub attn_pdrop: f64,
}

/// `GPT2MLP`: `c_proj(act(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    pub act: String,
}

/// `GPT2Block`.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub attn: Gpt2Attention,
    pub ln_2: LayerNorm,
    pub mlp: Gpt2Mlp,
    /// Dropout on the attention and MLP outputs while training (`resid_pdrop`).
    pub resid_pdrop: f64,
}

/// `GPT2LMHeadModel`: `transformer.{wte, wpe, h, ln_f}` + `lm_head` (tied by default).
#[derive(Module, Debug)]
pub struct Gpt2LmHeadModel {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub h: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    pub lm_head: Option<Linear>,
    /// tunelab's kernels or burn's ops (see [`Kernels`]).
    #[module(skip)]
    pub kernels: Kernels,
}

/// Prefix of the body's tensor names in `GPT2LMHeadModel` checkpoints.
pub const PREFIX: &str = "transformer.";

impl Gpt2LmHeadModel {
    /// Build from loaded tensors, checking every shape against `cfg`.
    pub fn load(cfg: &Gpt2Config, w: &mut WeightStore) -> Result<Self, HfError> {
        let (d, v) = (cfg.n_embd, cfg.vocab_size);
        let hint = format!("n_embd {d}, n_head {}, n_inner {}", cfg.n_head, cfg.n_inner);
        let wte = Embedding::load(w, "wte", [v, d], &format!("vocab_size {v}, n_embd {d}"))?;
        let wpe = Embedding::load(
            w,
            "wpe",
            [cfg.n_positions, d],
            &format!("n_positions {}, n_embd {d}", cfg.n_positions),
        )?;
        let head_dim = d / cfg.n_head;
        let mut h = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("h.{i}");
            let mut scale = 1.0;
            if cfg.scale_attn_weights {
                scale /= (head_dim as f64).sqrt();
            }
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            h.push(Gpt2Block {
                ln_1: layer_norm(w, &format!("{p}.ln_1"), cfg)?,
                attn: Gpt2Attention {
                    c_attn: Linear::load_conv1d(w, &format!("{p}.attn.c_attn"), d, 3 * d, &hint)?,
                    c_proj: Linear::load_conv1d(w, &format!("{p}.attn.c_proj"), d, d, &hint)?,
                    num_heads: cfg.n_head,
                    head_dim,
                    scale,
                    attn_pdrop: 0.0,
                },
                ln_2: layer_norm(w, &format!("{p}.ln_2"), cfg)?,
                mlp: Gpt2Mlp {
                    c_fc: Linear::load_conv1d(w, &format!("{p}.mlp.c_fc"), d, cfg.n_inner, &hint)?,
                    c_proj: Linear::load_conv1d(
                        w,
                        &format!("{p}.mlp.c_proj"),
                        cfg.n_inner,
                        d,
                        &hint,
                    )?,
                    act: cfg.activation_function.clone(),
                },
                resid_pdrop: 0.0,
            });
        }
        let ln_f = layer_norm(w, "ln_f", cfg)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let lm = w.take_exact(
                "lm_head.weight",
                [v, d],
                &format!("vocab_size {v}, n_embd {d}"),
            )?;
            Some(Linear::from_weight(lm.transpose(), "lm_head"))
        };
        Ok(Gpt2LmHeadModel {
            wte,
            wpe,
            h,
            ln_f,
            lm_head,
            kernels: Kernels::default(),
        })
    }

    /// Final hidden states `[batch, seq, hidden]` (after `ln_f`) for `ids` `[batch, seq]` under an
    /// additive `mask`; with a cache, `ids` continue the cached positions and their keys/values
    /// are appended.
    pub fn hidden(
        &self,
        ids: Tensor<2, Int>,
        mask: AttentionMask,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let start = cache.as_ref().map_or(0, |c| c.len()) as i64;
        let positions = Tensor::<1, Int>::arange(start..start + t as i64, &ids.device())
            .unsqueeze::<2>()
            .expand([b, t]);
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions);
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(x, mask.clone(), slot, self.kernels);
        }
        self.ln_f.forward(x)
    }

    /// The LM head: logits `[batch, seq, vocab]` from hidden states.
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(x, self.kernels),
            None => self.wte.attend(x, self.kernels),
        }
    }

    /// The LM head as a plain `[hidden, vocab]` matrix, or None when it has a bias or an adapter.
    pub fn head_matrix(&self) -> Option<Tensor<2>> {
        match &self.lm_head {
            Some(head) => head.matrix(),
            None => Some(self.wte.weight.val().transpose()),
        }
    }
}

impl Gpt2LmHeadModel {
    /// Visit every linear layer with its HF module path.
    pub fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        for b in &mut self.h {
            let (a, m) = (&mut b.attn, &mut b.mlp);
            for lin in [&mut a.c_attn, &mut a.c_proj, &mut m.c_fc, &mut m.c_proj] {
                lin.visit_named(f);
            }
        }
        if let Some(head) = &mut self.lm_head {
            head.visit_named(f);
        }
    }

    /// Visit every parameter that is not inside a linear layer, with its HF name.
    pub fn for_each_other_param(&mut self, f: &mut Visit) {
        self.wte.visit_named(f);
        self.wpe.visit_named(f);
        for b in &mut self.h {
            b.ln_1.visit_named(f);
            b.ln_2.visit_named(f);
        }
        self.ln_f.visit_named(f);
    }

    /// Set attention-probability and residual dropout (active only while training).
    pub fn set_dropout(&mut self, attention: f64, residual: f64) {
        for b in &mut self.h {
            b.attn.attn_pdrop = attention;
            b.resid_pdrop = residual;
        }
    }
}

impl Gpt2Block {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: AttentionMask,
        cache: LayerCache,
        kernels: Kernels,
    ) -> Tensor<3> {
        let attn = self
            .attn
            .forward(self.ln_1.forward(x.clone()), mask, cache, kernels);
        let h = x + dropout(attn, self.resid_pdrop);
        let mlp = self.mlp.forward(self.ln_2.forward(h.clone()), kernels);
        h + dropout(mlp, self.resid_pdrop)
    }
}

impl Gpt2Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        mask: AttentionMask,
        cache: LayerCache,
        kernels: Kernels,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let qkv = self.c_attn.forward(x, kernels);
        let split = |i: usize| {
            qkv.clone()
                .slice_dim(2, i * d..(i + 1) * d)
                .reshape([b, t, self.num_heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let (k, v) = match cache {
            Some((c, i)) => c.extend(i, split(1), split(2)),
            None => (split(1), split(2)),
        };
        let out = attention(split(0), k, v, mask, self.scale, self.attn_pdrop, kernels);
        self.c_proj.forward(out, kernels)
    }
}

impl Gpt2Mlp {
    fn forward(&self, x: Tensor<3>, kernels: Kernels) -> Tensor<3> {
        let h = activation(&self.act, self.c_fc.forward(x, kernels));
        self.c_proj.forward(h, kernels)
    }
}

fn layer_norm(w: &mut WeightStore, name: &str, cfg: &Gpt2Config) -> Result<LayerNorm, HfError> {
    LayerNorm::load(w, name, cfg.n_embd, cfg.layer_norm_epsilon)
}
