// Llama (LlamaForCausalLM): RMSNorm, SwiGLU, RoPE, GQA; with add_bias_linear, biases on q/k/v/o and on
// gate/up/down (attention_bias / mlp_bias); tied or untied embeddings.
#include "model/families/gpt_blocks.hpp"
#include "model/families/families.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kSwiGluMlp, blocks::kLayerNorms,
                                 blocks::kFinal);

void config(const ModelSpec&, nlohmann::json& c) {
    c["architectures"] = {"LlamaForCausalLM"};
    // Not in the Megatron args (they belong to the tokenizer): LlamaConfig's defaults.
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
    c["model_type"] = "llama";
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_layout_refusal(s); !why.empty()) return why;
    if (s.qk_layernorm) return "qk_layernorm (Llama has no q/k norms: qwen3 or opensci have)";
    if (s.qkv_bias != s.linear_bias) return "add_qkv_bias without add_bias_linear (biases on q/k/v only: qwen2)";
    return {};
}

}  // namespace

const Family& llama_family() {
    static const Family family{Arch::Llama, "llama", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
