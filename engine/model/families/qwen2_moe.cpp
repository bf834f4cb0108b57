// Qwen2-MoE (Qwen2MoeForCausalLM): Qwen2's attention (biases on q/k/v only) with an MoE block on every layer: the
// routed experts and one shared expert whose output a sigmoid gate scales (moe_shared_expert_gate).
#include "model/families/families.hpp"
#include "model/families/gpt_blocks.hpp"

namespace m2h::model {
namespace {

using enum Split;
using enum Extent;
using enum Transform;

constexpr std::array kSharedExpert{
    TensorRule{"decoder.layers.*.mlp.shared_experts.linear_fc1.weight", Gated, {GatedSharedFfn, Hidden}, "model.layers.*.mlp.shared_expert.gate_proj.weight", Gate},
    TensorRule{"decoder.layers.*.mlp.shared_experts.linear_fc1.weight", Gated, {GatedSharedFfn, Hidden}, "model.layers.*.mlp.shared_expert.up_proj.weight", Up},
    TensorRule{"decoder.layers.*.mlp.shared_experts.linear_fc2.weight", Dim1, {Hidden, SharedFfn}, "model.layers.*.mlp.shared_expert.down_proj.weight"},
    TensorRule{"decoder.layers.*.mlp.shared_experts.gate_weight", Replicated, {One, Hidden}, "model.layers.*.mlp.shared_expert_gate.weight"},
};

constexpr auto kTensors = concat(blocks::kEmbedding, blocks::kAttention, blocks::kQwenExperts, kSharedExpert,
                                 blocks::kLayerNorms, blocks::kFinal);

void config(const ModelSpec& s, nlohmann::json& c) {
    c["architectures"] = {"Qwen2MoeForCausalLM"};
    c["model_type"] = "qwen2_moe";
    blocks::qwen_moe_config(s, c);
    c["shared_expert_intermediate_size"] = s.moe.shared_ffn_hidden_size;
    c["qkv_bias"] = true;
    for (const char* llama_only : {"pretraining_tp", "mlp_bias", "attention_bias"}) c.erase(llama_only);
}

std::string refuses(const ModelSpec& s) {
    if (auto why = blocks::llama_moe_refusal(s); !why.empty()) return why;
    if (s.window) return "window_size (sliding-window attention)";
    if (s.qk_layernorm) return "qk_layernorm (Qwen2-MoE has no q/k norms: qwen3_moe has)";
    if (!s.qkv_bias) return "no q/k/v biases (Qwen2-MoE has them: add_qkv_bias)";
    if (!s.moe.shared_ffn_hidden_size || !s.moe.shared_expert_gate)
        return "no gated shared expert (Qwen2-MoE has one: moe_shared_expert_intermediate_size with moe_shared_expert_gate)";
    return {};
}

}  // namespace

const Family& qwen2_moe_family() {
    static const Family family{Arch::Qwen2Moe, "qwen2_moe", kTensors, config, refuses};
    return family;
}

}  // namespace m2h::model
