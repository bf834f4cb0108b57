#pragma once
// The tensors of Megatron's GPTModel, in blocks that families put together in their HF state-dict order.
// Megatron side: global shapes in the model's sizes and how TP cuts them; HF side: the Llama naming that the
// Llama-derived families share.
#include <array>
#include <string>

#include <nlohmann/json.hpp>

#include "model/family.hpp"

namespace m2h::model::blocks {

using enum Split;
using enum Extent;
using enum Transform;
using enum When;

inline constexpr std::array kEmbedding{
    TensorRule{"embedding.word_embeddings.weight", Dim0, {Vocab, Hidden}, "model.embed_tokens.weight", VocabRows},
};

// Fused QKV split per query group into q/k/v, then the output projection; weights before biases. The q/k/v biases
// come with add_qkv_bias or add_bias_linear, o_proj's with add_bias_linear only.
inline constexpr std::array kAttention{
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.weight", Dim0, {Qkv, Hidden}, "model.layers.*.self_attn.q_proj.weight", Query},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.bias", Dim0, {Qkv}, "model.layers.*.self_attn.q_proj.bias", Query, QkvBias},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.weight", Dim0, {Qkv, Hidden}, "model.layers.*.self_attn.k_proj.weight", Key},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.bias", Dim0, {Qkv}, "model.layers.*.self_attn.k_proj.bias", Key, QkvBias},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.weight", Dim0, {Qkv, Hidden}, "model.layers.*.self_attn.v_proj.weight", Value},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.bias", Dim0, {Qkv}, "model.layers.*.self_attn.v_proj.bias", Value, QkvBias},
    TensorRule{"decoder.layers.*.self_attention.linear_proj.weight", Dim1, {Hidden, AttentionOut}, "model.layers.*.self_attn.o_proj.weight"},
    TensorRule{"decoder.layers.*.self_attention.linear_proj.bias", Replicated, {Hidden}, "model.layers.*.self_attn.o_proj.bias", Whole, LinearBias},
};

// Open-Sci's per-head q/k RMSNorm (qk_layernorm).
inline constexpr std::array kQkLayernorm{
    TensorRule{"decoder.layers.*.self_attention.q_layernorm.weight", Replicated, {HeadDim}, "model.layers.*.self_attn.q_layernorm.weight", Whole, QkLayernorm},
    TensorRule{"decoder.layers.*.self_attention.k_layernorm.weight", Replicated, {HeadDim}, "model.layers.*.self_attn.k_layernorm.weight", Whole, QkLayernorm},
};

// Qwen3's names for the same per-head q/k RMSNorm.
inline constexpr std::array kQkNorm{
    TensorRule{"decoder.layers.*.self_attention.q_layernorm.weight", Replicated, {HeadDim}, "model.layers.*.self_attn.q_norm.weight", Whole, QkLayernorm},
    TensorRule{"decoder.layers.*.self_attention.k_layernorm.weight", Replicated, {HeadDim}, "model.layers.*.self_attn.k_norm.weight", Whole, QkLayernorm},
};

// SwiGLU: fc1 is the global [gate; up].
inline constexpr std::array kSwiGluMlp{
    TensorRule{"decoder.layers.*.mlp.linear_fc1.weight", Gated, {GatedFfn, Hidden}, "model.layers.*.mlp.gate_proj.weight", Gate},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.bias", Gated, {GatedFfn}, "model.layers.*.mlp.gate_proj.bias", Gate, LinearBias},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.weight", Gated, {GatedFfn, Hidden}, "model.layers.*.mlp.up_proj.weight", Up},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.bias", Gated, {GatedFfn}, "model.layers.*.mlp.up_proj.bias", Up, LinearBias},
    TensorRule{"decoder.layers.*.mlp.linear_fc2.weight", Dim1, {Hidden, Ffn}, "model.layers.*.mlp.down_proj.weight"},
    TensorRule{"decoder.layers.*.mlp.linear_fc2.bias", Replicated, {Hidden}, "model.layers.*.mlp.down_proj.bias", Whole, LinearBias},
};

// Qwen's MoE block (Qwen2-MoE, Qwen3-MoE): the router as `gate`, then each routed expert as a SwiGLU MLP.
inline constexpr std::array kQwenExperts{
    TensorRule{"decoder.layers.*.mlp.router.weight", Replicated, {Experts, Hidden}, "model.layers.*.mlp.gate.weight"},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc1.weight", Gated, {GatedExpertFfn, Hidden}, "model.layers.*.mlp.experts.*.gate_proj.weight", Gate},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc1.weight", Gated, {GatedExpertFfn, Hidden}, "model.layers.*.mlp.experts.*.up_proj.weight", Up},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc2.weight", Dim1, {Hidden, ExpertFfn}, "model.layers.*.mlp.experts.*.down_proj.weight"},
};

// The config.json fields Qwen's MoE classes share: an MoE block on every layer, softmax top-k routing.
inline void qwen_moe_config(const ModelSpec& s, nlohmann::json& c) {
    c["num_experts"] = s.moe.num_experts;
    c["num_experts_per_tok"] = s.moe.topk;
    c["moe_intermediate_size"] = s.moe.ffn_hidden_size;
    // Softmax over all experts then the top k: renormalised unless Megatron applied the softmax before the top-k.
    c["norm_topk_prob"] = !s.moe.pre_softmax;
    c["decoder_sparse_step"] = 1;
    c["mlp_only_layers"] = nlohmann::json::array();
    c["output_router_logits"] = false;
    c["use_sliding_window"] = false;
    c["max_window_layers"] = s.num_layers;
}

// The pre-attention and pre-MLP norms (TransformerEngine fuses them into the following linear layer).
inline constexpr std::array kLayerNorms{
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.layer_norm_weight", Replicated, {Hidden}, "model.layers.*.input_layernorm.weight"},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.layer_norm_weight", Replicated, {Hidden}, "model.layers.*.post_attention_layernorm.weight"},
};

inline constexpr std::array kFinal{
    TensorRule{"decoder.final_layernorm.weight", Replicated, {Hidden}, "model.norm.weight"},
    TensorRule{"output_layer.weight", Dim0, {Vocab, Hidden}, "lm_head.weight", VocabRows, Untied},
};

// What the Llama-derived HF classes hard-wire: RMSNorm, SwiGLU, RoPE over whole heads. Empty when the model has it.
inline std::string llama_block_refusal(const ModelSpec& s) {
    if (s.norm != Norm::RMSNorm) return "normalization LayerNorm (this class has RMSNorm)";
    if (s.activation != Activation::SwiGLU) return "a non-gated MLP (swiglu is off; this class has SwiGLU)";
    if (s.rotary_percent != 1.0) return "rotary_percent " + std::to_string(s.rotary_percent) + " (partial rotary)";
    return {};
}

// ... with a dense MLP and full attention.
inline std::string llama_layout_refusal(const ModelSpec& s) {
    if (s.is_moe()) return "mixture of experts (num_experts: mixtral, qwen2_moe or qwen3_moe)";
    if (s.window) return "window_size (sliding-window attention: mistral)";
    return llama_block_refusal(s);
}

// ... with an MoE block on every layer and no linear biases (HF's MoE classes have none on their experts).
inline std::string llama_moe_refusal(const ModelSpec& s) {
    if (!s.is_moe()) return "a dense MLP (no num_experts)";
    if (s.linear_bias) return "add_bias_linear (this MoE class has no linear biases)";
    return llama_block_refusal(s);
}

}  // namespace m2h::model::blocks
