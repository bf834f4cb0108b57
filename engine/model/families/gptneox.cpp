// GPT-NeoX (GPTNeoXForCausalLM), the classic Megatron GPT recipe: LayerNorm with bias, a non-gated GeLU MLP,
// biases on every linear layer, rotary embeddings on a share of each head (rotary_pct), sequential residuals.
// Megatron's fused QKV of a multi-head model is [q; k; v] per head, which is NeoX's query_key_value as it is.
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

using enum Split;
using enum Extent;
using enum Transform;
using enum When;

// In GPTNeoXForCausalLM's state-dict order (a layer's norms come before its attention and MLP).
constexpr std::array kTensors{
    TensorRule{"embedding.word_embeddings.weight", Dim0, {Vocab, Hidden}, "gpt_neox.embed_in.weight", VocabRows},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.layer_norm_weight", Replicated, {Hidden}, "gpt_neox.layers.*.input_layernorm.weight"},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.layer_norm_bias", Replicated, {Hidden}, "gpt_neox.layers.*.input_layernorm.bias"},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.layer_norm_weight", Replicated, {Hidden}, "gpt_neox.layers.*.post_attention_layernorm.weight"},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.layer_norm_bias", Replicated, {Hidden}, "gpt_neox.layers.*.post_attention_layernorm.bias"},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.weight", Dim0, {Qkv, Hidden}, "gpt_neox.layers.*.attention.query_key_value.weight"},
    TensorRule{"decoder.layers.*.self_attention.linear_qkv.bias", Dim0, {Qkv}, "gpt_neox.layers.*.attention.query_key_value.bias"},
    TensorRule{"decoder.layers.*.self_attention.linear_proj.weight", Dim1, {Hidden, AttentionOut}, "gpt_neox.layers.*.attention.dense.weight"},
    TensorRule{"decoder.layers.*.self_attention.linear_proj.bias", Replicated, {Hidden}, "gpt_neox.layers.*.attention.dense.bias"},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.weight", Dim0, {Ffn, Hidden}, "gpt_neox.layers.*.mlp.dense_h_to_4h.weight"},
    TensorRule{"decoder.layers.*.mlp.linear_fc1.bias", Dim0, {Ffn}, "gpt_neox.layers.*.mlp.dense_h_to_4h.bias"},
    TensorRule{"decoder.layers.*.mlp.linear_fc2.weight", Dim1, {Hidden, Ffn}, "gpt_neox.layers.*.mlp.dense_4h_to_h.weight"},
    TensorRule{"decoder.layers.*.mlp.linear_fc2.bias", Replicated, {Hidden}, "gpt_neox.layers.*.mlp.dense_4h_to_h.bias"},
    TensorRule{"decoder.final_layernorm.weight", Replicated, {Hidden}, "gpt_neox.final_layer_norm.weight"},
    TensorRule{"decoder.final_layernorm.bias", Replicated, {Hidden}, "gpt_neox.final_layer_norm.bias"},
    // The published checkpoints' name; transformers 5 loads it as lm_head.
    TensorRule{"output_layer.weight", Dim0, {Vocab, Hidden}, "embed_out.weight", VocabRows, Untied},
};

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"GPTNeoXForCausalLM"};
    c["model_type"] = "gpt_neox";
    // Not in the Megatron args (they belong to the tokenizer): GPTNeoXConfig's defaults.
    c["bos_token_id"] = 0;
    c["eos_token_id"] = 2;
    c["hidden_act"] = "gelu";
    c["layer_norm_eps"] = c["rms_norm_eps"];
    c["rotary_emb_base"] = c["rope_theta"];
    c["rotary_pct"] = s.rotary_percent;
    c["use_parallel_residual"] = false;  // Megatron adds attention and MLP one after the other
    // Llama's spellings of what NeoX names above, and what NeoX derives (head size, KV heads) or lacks.
    for (const char* llama_only : {"rms_norm_eps", "rope_theta", "rope_scaling", "head_dim", "num_key_value_heads",
                                   "pretraining_tp", "mlp_bias"})
        c.erase(llama_only);
}

std::string refuses(const ModelSpec& s) {
    if (s.is_moe()) return "mixture of experts (num_experts)";
    if (s.norm != Norm::LayerNorm) return "normalization RMSNorm (GPT-NeoX has LayerNorm)";
    if (s.activation != Activation::GeLU) return "an MLP that is not a plain GeLU";
    if (!s.linear_bias) return "no linear biases (GPT-NeoX has them everywhere)";
    if (s.qk_layernorm) return "qk_layernorm";
    if (s.window) return "window_size (sliding-window attention)";
    if (s.num_query_groups != s.num_heads) return "grouped-query attention (GPT-NeoX is multi-head)";
    if (s.head_dim * s.num_heads != s.hidden_size) return "kv_channels other than hidden_size / heads";
    return {};
}

}  // namespace

const Family& gptneox_family() {
    static const Family family{Arch::GptNeoX, "gptneox", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
