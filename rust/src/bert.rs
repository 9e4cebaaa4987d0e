//! A BERT encoder with sentence pooling, in float32: what `bsc.embedders.NativeEmbedder` runs.
//!
//! The forward pass of Hugging Face's `BertModel` followed by sentence-transformers' pooling:
//! embeddings (word + token type + position) and LayerNorm; per layer, self-attention over the padding
//! mask (the query, key and value projections as one product), the output projection with the residual,
//! LayerNorm, the feed-forward pair with its activation, the residual and LayerNorm again; then the mean
//! over the kept tokens, or the first token. Weights are copied in once and packed for the matrix kernel
//! ([`gemm`]); a call allocates its own activations, so one model serves any number of threads at once.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod gemm;
pub mod layers;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{try_zeroed, BscError, Result};
pub use gemm::Kernel;
use gemm::{parallel_parts, Epilogue, Linear};
pub use layers::{Activation, Pooling};
use layers::{Heads, Vector};

/// The parts of a Hugging Face `config.json` that decide the computation (the rest is read off the
/// weights' shapes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub activation: Activation,
    pub layer_norm_eps: f32,
    pub pooling: Pooling,
}

/// A weight tensor as read from the checkpoint: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// The token inputs of one call: `batch` sequences of `seq` tokens, row-major, as the tokenizer gives them
/// (padding at any position, marked 0 in `attention_mask`).
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    pub input_ids: &'a [i32],
    pub token_type_ids: &'a [i32],
    pub attention_mask: &'a [i32],
    pub batch: usize,
    pub seq: usize,
}

/// A loaded encoder. Immutable: `forward` may run on several threads at once.
pub struct Bert {
    config: BertConfig,
    kernel: Kernel,
    vector: Vector,
    vocab: usize,
    positions: usize,
    token_types: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// The checkpoint tensor names the encoder reads, for a model of `num_layers` layers (without the
/// optional `bert.` prefix some checkpoints add).
pub fn tensor_names(num_layers: usize) -> Vec<String> {
    let mut names: Vec<String> = ["word", "position", "token_type"]
        .iter()
        .map(|e| format!("embeddings.{e}_embeddings.weight"))
        .collect();
    names.extend(["weight", "bias"].map(|p| format!("embeddings.LayerNorm.{p}")));
    for i in 0..num_layers {
        let layer = format!("encoder.layer.{i}");
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            names.extend(["weight", "bias"].map(|p| format!("{layer}.{part}.{p}")));
        }
    }
    names
}

/// Takes tensors out of the checkpoint map, checking each one's shape.
struct Checkpoint<'a>(&'a mut HashMap<String, Tensor>);

impl Checkpoint<'_> {
    /// The tensor `name`, which must have `shape` (`None` entries accept any size and are returned).
    fn take(&mut self, name: &str, shape: &[Option<usize>]) -> Result<(Vec<f32>, Vec<usize>)> {
        let tensor = self
            .0
            .remove(name)
            .ok_or_else(|| BscError::InvalidArgument(format!("weight {name:?} is missing")))?;
        let fits = tensor.shape.len() == shape.len()
            && tensor
                .shape
                .iter()
                .zip(shape)
                .all(|(&d, want)| want.is_none_or(|w| w == d));
        let count: usize = tensor.shape.iter().product();
        if !fits || count != tensor.data.len() {
            let expected: Vec<String> = shape
                .iter()
                .map(|d| d.map_or_else(|| "any".to_string(), |d| d.to_string()))
                .collect();
            return Err(BscError::Shape(format!(
                "weight {name:?} has shape {:?} ({} values), expected ({})",
                tensor.shape,
                tensor.data.len(),
                expected.join(", ")
            )));
        }
        Ok((tensor.data, tensor.shape))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.take(name, &[Some(len)])?.0)
    }

    fn norm(&mut self, prefix: &str, hidden: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.vector(&format!("{prefix}.weight"), hidden)?,
            beta: self.vector(&format!("{prefix}.bias"), hidden)?,
        })
    }

    /// The `(out, in)` weight and bias of a linear layer; `out` may be left open (`None`).
    fn linear_parts(
        &mut self,
        prefix: &str,
        out: Option<usize>,
        inputs: usize,
    ) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        let (weight, shape) = self.take(&format!("{prefix}.weight"), &[out, Some(inputs)])?;
        let bias = self.vector(&format!("{prefix}.bias"), shape[0])?;
        Ok((weight, bias, shape[0]))
    }
}

impl Bert {
    /// Builds the encoder from `tensors` (by [`tensor_names`]; extra entries are ignored), packing the
    /// matrices for `kernel`.
    ///
    /// # Errors
    /// `InvalidArgument` for a config that is not a BERT this computes (zero sizes, a width not a multiple
    /// of the heads), a missing tensor or an unavailable kernel; `Shape` for a tensor of the wrong shape.
    pub fn new(
        config: BertConfig,
        mut tensors: HashMap<String, Tensor>,
        kernel: Kernel,
    ) -> Result<Bert> {
        let BertConfig {
            hidden_size: hidden,
            num_layers,
            num_heads,
            ..
        } = config;
        if hidden == 0 || num_layers == 0 || num_heads == 0 || hidden % num_heads != 0 {
            return Err(BscError::InvalidArgument(format!(
                "hidden_size {hidden} must be a positive multiple of num_heads {num_heads}, with at least one layer (got {num_layers})"
            )));
        }
        if !kernel.is_available() {
            return Err(BscError::InvalidArgument(format!(
                "the {} kernel needs CPU features this machine lacks",
                kernel.name()
            )));
        }
        let vector = match kernel {
            Kernel::Avx512 => Vector::Avx512,
            Kernel::Portable => Vector::Baseline,
        };
        let mut ckpt = Checkpoint(&mut tensors);
        let (word, word_shape) =
            ckpt.take("embeddings.word_embeddings.weight", &[None, Some(hidden)])?;
        let (position, position_shape) = ckpt.take(
            "embeddings.position_embeddings.weight",
            &[None, Some(hidden)],
        )?;
        let (token_type, type_shape) = ckpt.take(
            "embeddings.token_type_embeddings.weight",
            &[None, Some(hidden)],
        )?;
        let embedding_norm = ckpt.norm("embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let p = format!("encoder.layer.{i}");
            let mut qkv_weight = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_bias = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                let (w, b, _) =
                    ckpt.linear_parts(&format!("{p}.attention.self.{part}"), Some(hidden), hidden)?;
                qkv_weight.extend(w);
                qkv_bias.extend(b);
            }
            let (w, b, _) =
                ckpt.linear_parts(&format!("{p}.attention.output.dense"), Some(hidden), hidden)?;
            let attention_output = Linear::new(&w, &b, hidden, hidden, kernel);
            let attention_norm = ckpt.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?;
            let (w, b, inner) =
                ckpt.linear_parts(&format!("{p}.intermediate.dense"), None, hidden)?;
            let intermediate = Linear::new(&w, &b, inner, hidden, kernel);
            let (w, b, _) = ckpt.linear_parts(&format!("{p}.output.dense"), Some(hidden), inner)?;
            let output = Linear::new(&w, &b, hidden, inner, kernel);
            layers.push(Layer {
                qkv: Linear::new(&qkv_weight, &qkv_bias, 3 * hidden, hidden, kernel),
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm: ckpt.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        Ok(Bert {
            config,
            kernel,
            vector,
            vocab: word_shape[0],
            positions: position_shape[0],
            token_types: type_shape[0],
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Position embeddings the checkpoint has: the longest sequence it reads.
    pub fn max_positions(&self) -> usize {
        self.positions
    }

    /// The pooled (not normalised) sentence vectors of `tokens`, `batch × hidden_size` row-major, with the
    /// matrix products split over `threads` parts (1 = the calling thread only).
    ///
    /// # Errors
    /// `Shape` if the arrays are not `batch × seq` or `seq` exceeds the position embeddings;
    /// `InvalidArgument` for a token id or type outside the vocabulary, or a mask value other than 0/1;
    /// `OutOfMemory` if the activations cannot be allocated.
    pub fn forward(&self, tokens: Tokens<'_>, threads: usize) -> Result<Vec<f32>> {
        self.check(&tokens)?;
        let Tokens { batch, seq, .. } = tokens;
        let hidden = self.config.hidden_size;
        let m = batch * seq;
        let mut state = try_zeroed::<f32>(m * hidden, "encoder activations")?;
        let mut attended = try_zeroed::<f32>(m * hidden, "encoder activations")?;
        let mut context = try_zeroed::<f32>(m * hidden, "encoder activations")?;
        let mut qkv = try_zeroed::<f32>(m * 3 * hidden, "attention projections")?;
        let inner = self.layers.first().map_or(0, |l| l.intermediate.outputs());
        let mut intermediate = try_zeroed::<f32>(m * inner, "feed-forward activations")?;
        self.embed(&tokens, &mut state);
        let heads = Heads {
            seq,
            hidden,
            heads: self.config.num_heads,
        };
        for layer in &self.layers {
            layer
                .qkv
                .forward(&state, m, Epilogue::Bias, &mut qkv, threads);
            self.attend(&qkv, tokens.attention_mask, &mut context, heads, threads);
            layer.attention_output.forward(
                &context,
                m,
                Epilogue::Residual(&state),
                &mut attended,
                threads,
            );
            layers::layer_norm(
                &mut attended,
                &layer.attention_norm.gamma,
                &layer.attention_norm.beta,
                self.config.layer_norm_eps,
            );
            let intermediate = &mut intermediate[..m * layer.intermediate.outputs()];
            if self.config.activation == Activation::Gelu {
                let gelu = Epilogue::Gelu;
                layer
                    .intermediate
                    .forward(&attended, m, gelu, intermediate, threads);
            } else {
                let bias = Epilogue::Bias;
                layer
                    .intermediate
                    .forward(&attended, m, bias, intermediate, threads);
                layers::activate(intermediate, self.config.activation, self.vector);
            }
            layer.output.forward(
                intermediate,
                m,
                Epilogue::Residual(&attended),
                &mut state,
                threads,
            );
            layers::layer_norm(
                &mut state,
                &layer.output_norm.gamma,
                &layer.output_norm.beta,
                self.config.layer_norm_eps,
            );
        }
        let mut pooled = try_zeroed::<f32>(batch * hidden, "sentence vectors")?;
        for (b, out) in pooled.chunks_exact_mut(hidden).enumerate() {
            let rows = &state[b * seq * hidden..(b + 1) * seq * hidden];
            layers::pool(
                rows,
                &tokens.attention_mask[b * seq..(b + 1) * seq],
                hidden,
                self.config.pooling,
                out,
            );
        }
        Ok(pooled)
    }

    fn check(&self, t: &Tokens<'_>) -> Result<()> {
        let cells = t
            .batch
            .checked_mul(t.seq)
            .ok_or_else(|| BscError::Shape("batch × sequence overflows".into()))?;
        for (name, values) in [
            ("input_ids", t.input_ids),
            ("token_type_ids", t.token_type_ids),
            ("attention_mask", t.attention_mask),
        ] {
            if values.len() != cells {
                return Err(BscError::Shape(format!(
                    "{name} has {} values, expected batch {} × sequence {} = {cells}",
                    values.len(),
                    t.batch,
                    t.seq
                )));
            }
        }
        if t.seq > self.positions {
            return Err(BscError::Shape(format!(
                "sequences of {} tokens are longer than the model's {} positions",
                t.seq, self.positions
            )));
        }
        let outside = |values: &[i32], limit: usize| {
            values
                .iter()
                .position(|&v| usize::try_from(v).map_or(true, |v| v >= limit))
        };
        if let Some(i) = outside(t.input_ids, self.vocab) {
            return Err(BscError::InvalidArgument(format!(
                "input_ids[{i}] = {} is outside the vocabulary of {} tokens",
                t.input_ids[i], self.vocab
            )));
        }
        if let Some(i) = outside(t.token_type_ids, self.token_types) {
            return Err(BscError::InvalidArgument(format!(
                "token_type_ids[{i}] = {} is outside the model's {} token types",
                t.token_type_ids[i], self.token_types
            )));
        }
        if let Some(i) = outside(t.attention_mask, 2) {
            return Err(BscError::InvalidArgument(format!(
                "attention_mask[{i}] = {} must be 0 or 1",
                t.attention_mask[i]
            )));
        }
        Ok(())
    }

    /// Word + token type + position embeddings (in torch's order of additions), then LayerNorm.
    fn embed(&self, t: &Tokens<'_>, out: &mut [f32]) {
        let hidden = self.config.hidden_size;
        for (row, out) in out.chunks_exact_mut(hidden).enumerate() {
            // Checked in `check`: ids and types are in range, and row % seq < positions.
            let id = t.input_ids[row] as usize;
            let kind = t.token_type_ids[row] as usize;
            let position = row % t.seq;
            let word = &self.word[id * hidden..(id + 1) * hidden];
            let kind = &self.token_type[kind * hidden..(kind + 1) * hidden];
            let position = &self.position[position * hidden..(position + 1) * hidden];
            for (((o, w), k), p) in out.iter_mut().zip(word).zip(kind).zip(position) {
                *o = (w + k) + p;
            }
        }
        layers::layer_norm(
            out,
            &self.embedding_norm.gamma,
            &self.embedding_norm.beta,
            self.config.layer_norm_eps,
        );
    }

    /// Attention of every sequence, the sequences split over `threads` parts.
    fn attend(&self, qkv: &[f32], mask: &[i32], context: &mut [f32], heads: Heads, threads: usize) {
        let Heads { seq, hidden, .. } = heads;
        let batch = mask.len() / seq;
        let parts = threads.clamp(1, batch.max(1));
        let per_part = batch.div_ceil(parts);
        let chunks: Vec<Mutex<&mut [f32]>> = context
            .chunks_mut(per_part * seq * hidden)
            .map(Mutex::new)
            .collect();
        parallel_parts(chunks.len(), |part| {
            // Each part locks only its own chunk, once: never contended.
            let Ok(mut out) = chunks[part].lock() else {
                return;
            };
            for (i, out) in out.chunks_exact_mut(seq * hidden).enumerate() {
                let b = part * per_part + i;
                let rows = &qkv[b * seq * 3 * hidden..(b + 1) * seq * 3 * hidden];
                layers::attention(rows, &mask[b * seq..(b + 1) * seq], out, heads, self.vector);
            }
        });
    }
}
