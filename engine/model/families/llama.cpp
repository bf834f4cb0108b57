// Llama (LlamaForCausalLM): RMSNorm, SwiGLU, RoPE, GQA; biases when Megatron trained with them
// (attention_bias / mlp_bias), tied or untied embeddings.
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

}  // namespace

const Family& llama_family() {
    static const Family family{Arch::Llama, "llama", kTensors, config};
    return family;
}

}  // namespace m2h::model
