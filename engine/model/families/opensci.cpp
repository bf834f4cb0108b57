// Open-Sci (OpensciForCausalLM, modeling code from the Open-Sci-hf repository): Llama with per-head q/k
// RMSNorm (qk_layernorm) and linear biases, tied embeddings.
#include "model/families/gpt_blocks.hpp"
#include "model/families/families.hpp"

namespace m2h::model {
namespace {

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kQkLayernorm, blocks::kSwiGluMlp,
                                 blocks::kLayerNorms, blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    // The published spelling; the class is OpensciForCausalLM and loads through auto_map either way.
    c["architectures"] = {"OpenSciForCausalLM"};
    c["auto_map"] = {{"AutoConfig", "configuration_opensci.OpensciConfig"},
                     {"AutoModel", "modeling_opensci.OpensciPreTrainedModel"},
                     {"AutoModelForCausalLM", "modeling_opensci.OpensciForCausalLM"}};
    // GPT-NeoX-20B tokenizer ids of the published models.
    c["bos_token_id"] = 0;
    c["eos_token_id"] = 0;
    c["layer_norm_eps"] = c["rms_norm_eps"];
    c["model_type"] = "opensci";
    c["qk_layernorm"] = s.qk_layernorm;
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_layout_refusal(s); !why.empty()) return why;
    if (s.qkv_bias != s.linear_bias) return "add_qkv_bias without add_bias_linear (biases on q/k/v only: qwen2)";
    return {};
}

}  // namespace

const Family& opensci_family() {
    static const Family family{Arch::OpenSci, "opensci", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
