// Mistral (MistralForCausalLM): Llama with sliding-window attention on every layer, no biases.
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kSwiGluMlp, blocks::kLayerNorms,
                                 blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"MistralForCausalLM"};
    c["model_type"] = "mistral";
    // Not in the Megatron args (they belong to the tokenizer): MistralConfig's defaults.
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
    // Megatron's window (N, 0) lets a query see itself and N earlier keys; HF's sliding_window counts the query.
    c["sliding_window"] = *s.window + 1;
}

std::string refuses(const ModelSpec& s) {
    if (!s.window) return "no window_size (without a sliding window that is llama)";
    auto without_window = s;
    without_window.window.reset();
    if (auto why = blocks::llama_layout_refusal(without_window); !why.empty()) return why;
    if (s.qk_layernorm || s.qkv_bias) return "q/k norms or biases (Mistral has neither)";
    return {};
}

}  // namespace

const Family& mistral_family() {
    static const Family family{Arch::Mistral, "mistral", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
