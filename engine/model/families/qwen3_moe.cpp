// Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention (per-head q/k norms, no biases) with an MoE block on every
// layer and no shared expert.
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kQkNorm, blocks::kQwenExperts,
                                 blocks::kLayerNorms, blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"Qwen3MoeForCausalLM"};
    c["model_type"] = "qwen3_moe";
    blocks::qwen_moe_config(s, c);
    for (const char* llama_only : {"pretraining_tp", "mlp_bias"}) c.erase(llama_only);
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_moe_refusal(s); !why.empty()) return why;
    if (s.window) return "window_size (sliding-window attention)";
    if (!s.qk_layernorm) return "no qk_layernorm (Qwen3-MoE normalises q and k per head: mixtral has no norms)";
    if (s.qkv_bias) return "q/k/v biases (Qwen3-MoE has none: qwen2_moe has)";
    if (s.moe.shared_ffn_hidden_size) return "a shared expert (Qwen3-MoE has none: qwen2_moe)";
    return {};
}

}  // namespace

const Family& qwen3_moe_family() {
    static const Family family{Arch::Qwen3Moe, "qwen3_moe", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
