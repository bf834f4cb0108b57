// Mixtral (MixtralForCausalLM): Llama's attention with an MoE block on every layer (router `gate`, experts
// w1 = gate, w2 = down, w3 = up, as mistralai publishes them), no biases, optionally a sliding window.
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

using enum Split;
using enum Extent;
using enum Transform;

constexpr std::array kExperts{
    TensorRule{"decoder.layers.*.mlp.router.weight", Replicated, {Experts, Hidden}, "model.layers.*.block_sparse_moe.gate.weight"},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc1.weight", Gated, {GatedExpertFfn, Hidden}, "model.layers.*.block_sparse_moe.experts.*.w1.weight", Gate},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc2.weight", Dim1, {Hidden, ExpertFfn}, "model.layers.*.block_sparse_moe.experts.*.w2.weight"},
    TensorRule{"decoder.layers.*.mlp.experts.*.linear_fc1.weight", Gated, {GatedExpertFfn, Hidden}, "model.layers.*.block_sparse_moe.experts.*.w3.weight", Up},
};

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, kExperts, blocks::kLayerNorms, blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"MixtralForCausalLM"};
    c["model_type"] = "mixtral";
    // Not in the Megatron args (they belong to the tokenizer): MixtralConfig's defaults.
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
    c["intermediate_size"] = s.moe.ffn_hidden_size;  // Mixtral's only MLP is the experts'
    c["num_local_experts"] = s.moe.num_experts;
    c["num_experts_per_tok"] = s.moe.topk;
    c["output_router_logits"] = false;
    c["router_jitter_noise"] = 0.0;
    // Megatron's window (N, 0) lets a query see itself and N earlier keys; HF's sliding_window counts the query.
    c["sliding_window"] = s.window ? nlohmann::json(*s.window + 1) : nlohmann::json();
    for (const char* llama_only : {"pretraining_tp", "mlp_bias", "attention_bias"}) c.erase(llama_only);
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_moe_refusal(s); !why.empty()) return why;
    if (s.qk_layernorm || s.qkv_bias) return "q/k norms or biases (Mixtral has neither: qwen3_moe, qwen2_moe)";
    if (s.moe.shared_ffn_hidden_size) return "a shared expert (Mixtral has none: qwen2_moe)";
    // Mixtral renormalises the top-k probabilities, as Megatron does when it applies the softmax after the top-k.
    if (s.moe.pre_softmax) return "moe_router_pre_softmax (Mixtral renormalises the top-k probabilities)";
    return {};
}

}  // namespace

const Family& mixtral_family() {
    static const Family family{Arch::Mixtral, "mixtral", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
