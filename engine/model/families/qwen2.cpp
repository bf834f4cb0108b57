// Qwen2 (Qwen2ForCausalLM): Llama with biases on q/k/v only (Megatron: add_qkv_bias without add_bias_linear).
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kSwiGluMlp, blocks::kLayerNorms,
                                 blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"Qwen2ForCausalLM"};
    c["model_type"] = "qwen2";
    c["use_sliding_window"] = false;
    c["max_window_layers"] = s.num_layers;
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_layout_refusal(s); !why.empty()) return why;
    if (s.qk_layernorm) return "qk_layernorm (Qwen2 has no q/k norms: qwen3 has)";
    if (s.linear_bias) return "add_bias_linear (Qwen2 has biases on q/k/v only)";
    if (!s.qkv_bias) return "no q/k/v biases (that is llama)";
    return {};
}

}  // namespace

const Family& qwen2_family() {
    static const Family family{Arch::Qwen2, "qwen2", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
