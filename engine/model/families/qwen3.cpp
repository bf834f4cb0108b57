// Qwen3 (Qwen3ForCausalLM): Llama with per-head q/k RMSNorm (q_norm, k_norm), no biases, head_dim from
// kv_channels.
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kQkNorm, blocks::kSwiGluMlp,
                                 blocks::kLayerNorms, blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"Qwen3ForCausalLM"};
    c["model_type"] = "qwen3";
    c["use_sliding_window"] = false;
    c["max_window_layers"] = s.num_layers;
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_layout_refusal(s); !why.empty()) return why;
    if (!s.qk_layernorm) return "no qk_layernorm (Qwen3 normalises q and k per head)";
    if (s.linear_bias || s.qkv_bias) return "linear or q/k/v biases (Qwen3 has none)";
    return {};
}

}  // namespace

const Family& qwen3_family() {
    static const Family family{Arch::Qwen3, "qwen3", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
