// Every family's table, expanded for a one-layer model: the HF names, in state-dict order, with their shapes.
// A naming slip or a reordered row fails here without a forward pass.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "model/family.hpp"
#include "model/hf_config.hpp"

using namespace m2h;
using namespace m2h::model;

namespace {

using Expected = std::vector<std::pair<std::string, std::vector<std::uint64_t>>>;

ModelSpec one_layer(Arch arch, bool bias, bool qk, bool tied) {
    ModelSpec s;
    s.arch = arch;
    s.num_layers = 1;
    s.hidden_size = 8;
    s.num_heads = 4;
    s.num_query_groups = 2;
    s.head_dim = 2;
    s.ffn_hidden_size = 12;
    s.padded_vocab_size = 16;
    s.linear_bias = bias;
    s.qkv_bias = bias;
    s.qk_layernorm = qk;
    s.tied_embeddings = tied;
    return s;
}

// The registry's expansion of the family table (the list the mapping writes, in order).
Expected expand(const ModelSpec& s) {
    Expected out;
    for (const auto& t : hf_tensors(family_of(s.arch), s)) out.emplace_back(t.hf, t.shape);
    return out;
}

ModelSpec one_moe_layer(Arch arch) {
    auto s = one_layer(arch, false, arch == Arch::Qwen3Moe, false);
    s.moe.num_experts = 2;
    s.moe.topk = 1;
    s.moe.ffn_hidden_size = 6;
    if (arch == Arch::Qwen2Moe) {
        s.qkv_bias = true;
        s.moe.shared_ffn_hidden_size = 10;
        s.moe.shared_expert_gate = true;
    }
    return s;
}

TEST(FamilyRegistry, LlamaUntiedWithoutBiases) {
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.mlp.gate_proj.weight", {12, 8}},
        {"model.layers.0.mlp.up_proj.weight", {12, 8}},
        {"model.layers.0.mlp.down_proj.weight", {8, 12}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
        {"lm_head.weight", {16, 8}},
    };
    EXPECT_EQ(expand(one_layer(Arch::Llama, false, false, false)), want);
}

TEST(FamilyRegistry, OpenSciTiedWithBiasesAndQkLayernorm) {
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.q_proj.bias", {8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.k_proj.bias", {4}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.bias", {4}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.o_proj.bias", {8}},
        {"model.layers.0.self_attn.q_layernorm.weight", {2}},
        {"model.layers.0.self_attn.k_layernorm.weight", {2}},
        {"model.layers.0.mlp.gate_proj.weight", {12, 8}},
        {"model.layers.0.mlp.gate_proj.bias", {12}},
        {"model.layers.0.mlp.up_proj.weight", {12, 8}},
        {"model.layers.0.mlp.up_proj.bias", {12}},
        {"model.layers.0.mlp.down_proj.weight", {8, 12}},
        {"model.layers.0.mlp.down_proj.bias", {8}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
    };
    EXPECT_EQ(expand(one_layer(Arch::OpenSci, true, true, true)), want);
}

TEST(FamilyRegistry, Qwen2BiasesOnQkvOnly) {
    auto s = one_layer(Arch::Qwen2, false, false, false);
    s.qkv_bias = true;
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.q_proj.bias", {8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.k_proj.bias", {4}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.bias", {4}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.mlp.gate_proj.weight", {12, 8}},
        {"model.layers.0.mlp.up_proj.weight", {12, 8}},
        {"model.layers.0.mlp.down_proj.weight", {8, 12}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
        {"lm_head.weight", {16, 8}},
    };
    EXPECT_EQ(expand(s), want);
}

TEST(FamilyRegistry, Qwen3QkNormsWithTheirOwnHeadDim) {
    auto s = one_layer(Arch::Qwen3, false, true, true);
    s.head_dim = 4;  // kv_channels, not hidden / heads
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {16, 8}},
        {"model.layers.0.self_attn.k_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.v_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 16}},
        {"model.layers.0.self_attn.q_norm.weight", {4}},
        {"model.layers.0.self_attn.k_norm.weight", {4}},
        {"model.layers.0.mlp.gate_proj.weight", {12, 8}},
        {"model.layers.0.mlp.up_proj.weight", {12, 8}},
        {"model.layers.0.mlp.down_proj.weight", {8, 12}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
    };
    EXPECT_EQ(expand(s), want);
}

TEST(FamilyRegistry, GptNeoXClassicRecipe) {
    auto s = one_layer(Arch::GptNeoX, true, false, false);
    s.num_query_groups = s.num_heads;
    s.norm = Norm::LayerNorm;
    s.activation = Activation::GeLU;
    const Expected want{
        {"gpt_neox.embed_in.weight", {16, 8}},
        {"gpt_neox.layers.0.input_layernorm.weight", {8}},
        {"gpt_neox.layers.0.input_layernorm.bias", {8}},
        {"gpt_neox.layers.0.post_attention_layernorm.weight", {8}},
        {"gpt_neox.layers.0.post_attention_layernorm.bias", {8}},
        {"gpt_neox.layers.0.attention.query_key_value.weight", {24, 8}},
        {"gpt_neox.layers.0.attention.query_key_value.bias", {24}},
        {"gpt_neox.layers.0.attention.dense.weight", {8, 8}},
        {"gpt_neox.layers.0.attention.dense.bias", {8}},
        {"gpt_neox.layers.0.mlp.dense_h_to_4h.weight", {12, 8}},
        {"gpt_neox.layers.0.mlp.dense_h_to_4h.bias", {12}},
        {"gpt_neox.layers.0.mlp.dense_4h_to_h.weight", {8, 12}},
        {"gpt_neox.layers.0.mlp.dense_4h_to_h.bias", {8}},
        {"gpt_neox.final_layer_norm.weight", {8}},
        {"gpt_neox.final_layer_norm.bias", {8}},
        {"embed_out.weight", {16, 8}},
    };
    EXPECT_EQ(expand(s), want);
    EXPECT_EQ(family_of(Arch::GptNeoX).refuses(s), "");
    s.num_query_groups = 2;
    EXPECT_NE(family_of(Arch::GptNeoX).refuses(s), "");  // GPT-NeoX has no grouped-query attention
    EXPECT_NE(family_of(Arch::Llama).refuses(s), "");     // nor Llama a LayerNorm
}

TEST(FamilyRegistry, MistralIsLlamaWithASlidingWindow) {
    auto s = one_layer(Arch::Mistral, false, false, false);
    EXPECT_NE(family_of(Arch::Mistral).refuses(s), "");  // no window: that is Llama
    s.window = 4;
    EXPECT_EQ(family_of(Arch::Mistral).refuses(s), "");
    EXPECT_NE(family_of(Arch::Llama).refuses(s), "");
    EXPECT_EQ(expand(s), expand(one_layer(Arch::Llama, false, false, false)));
    // Megatron's (4, 0) shows a query itself and 4 earlier keys; HF's sliding_window counts the query too.
    EXPECT_EQ(hf_config(s, nlohmann::json::object(), 16, DType::F32)["sliding_window"], 5);
}

TEST(FamilyRegistry, MixtralExpertsAfterTheirRouter) {
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.block_sparse_moe.gate.weight", {2, 8}},
        {"model.layers.0.block_sparse_moe.experts.0.w1.weight", {6, 8}},
        {"model.layers.0.block_sparse_moe.experts.0.w2.weight", {8, 6}},
        {"model.layers.0.block_sparse_moe.experts.0.w3.weight", {6, 8}},
        {"model.layers.0.block_sparse_moe.experts.1.w1.weight", {6, 8}},
        {"model.layers.0.block_sparse_moe.experts.1.w2.weight", {8, 6}},
        {"model.layers.0.block_sparse_moe.experts.1.w3.weight", {6, 8}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
        {"lm_head.weight", {16, 8}},
    };
    const auto s = one_moe_layer(Arch::Mixtral);
    EXPECT_EQ(expand(s), want);
    EXPECT_EQ(family_of(Arch::Mixtral).refuses(s), "");
    EXPECT_NE(family_of(Arch::Llama).refuses(s), "");  // the dense families refuse experts
    const auto config = hf_config(s, nlohmann::json::object(), 16, DType::BF16);
    EXPECT_EQ(config["num_local_experts"], 2);
    EXPECT_EQ(config["intermediate_size"], 6);  // the experts' size: Mixtral has no dense MLP
}

TEST(FamilyRegistry, Qwen3MoeQkNormsAndExperts) {
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.q_norm.weight", {2}},
        {"model.layers.0.self_attn.k_norm.weight", {2}},
        {"model.layers.0.mlp.gate.weight", {2, 8}},
        {"model.layers.0.mlp.experts.0.gate_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.0.up_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.0.down_proj.weight", {8, 6}},
        {"model.layers.0.mlp.experts.1.gate_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.1.up_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.1.down_proj.weight", {8, 6}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
        {"lm_head.weight", {16, 8}},
    };
    EXPECT_EQ(expand(one_moe_layer(Arch::Qwen3Moe)), want);
    EXPECT_EQ(family_of(Arch::Qwen3Moe).refuses(one_moe_layer(Arch::Qwen3Moe)), "");
}

TEST(FamilyRegistry, Qwen2MoeSharedExpertAndItsGate) {
    const Expected want{
        {"model.embed_tokens.weight", {16, 8}},
        {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
        {"model.layers.0.self_attn.q_proj.bias", {8}},
        {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.k_proj.bias", {4}},
        {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
        {"model.layers.0.self_attn.v_proj.bias", {4}},
        {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
        {"model.layers.0.mlp.gate.weight", {2, 8}},
        {"model.layers.0.mlp.experts.0.gate_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.0.up_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.0.down_proj.weight", {8, 6}},
        {"model.layers.0.mlp.experts.1.gate_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.1.up_proj.weight", {6, 8}},
        {"model.layers.0.mlp.experts.1.down_proj.weight", {8, 6}},
        {"model.layers.0.mlp.shared_expert.gate_proj.weight", {10, 8}},
        {"model.layers.0.mlp.shared_expert.up_proj.weight", {10, 8}},
        {"model.layers.0.mlp.shared_expert.down_proj.weight", {8, 10}},
        {"model.layers.0.mlp.shared_expert_gate.weight", {1, 8}},
        {"model.layers.0.input_layernorm.weight", {8}},
        {"model.layers.0.post_attention_layernorm.weight", {8}},
        {"model.norm.weight", {8}},
        {"lm_head.weight", {16, 8}},
    };
    const auto s = one_moe_layer(Arch::Qwen2Moe);
    EXPECT_EQ(expand(s), want);
    EXPECT_EQ(family_of(Arch::Qwen2Moe).refuses(s), "");
    EXPECT_NE(family_of(Arch::Qwen3Moe).refuses(s), "");  // Qwen3-MoE has no shared expert
    EXPECT_EQ(hf_config(s, nlohmann::json::object(), 16, DType::BF16)["shared_expert_intermediate_size"], 10);
}

TEST(FamilyRegistry, EachFamilyWritesItsArchitecture) {
    for (const auto& [arch, name] : {std::pair{Arch::Llama, "LlamaForCausalLM"}, std::pair{Arch::OpenSci, "OpenSciForCausalLM"},
                                     std::pair{Arch::Qwen2, "Qwen2ForCausalLM"}, std::pair{Arch::Qwen3, "Qwen3ForCausalLM"},
                                     std::pair{Arch::GptNeoX, "GPTNeoXForCausalLM"}}) {
        const auto config = hf_config(one_layer(arch, false, false, true), nlohmann::json::object(), 16, DType::BF16);
        EXPECT_EQ(config["architectures"][0], name);
        EXPECT_EQ(family_of(arch).arch, arch);
    }
}

TEST(FamilyRegistry, LookupByMegatronKey) {
    const auto& llama = family_of(Arch::Llama);
    ASSERT_NE(rule_for(llama, "decoder.layers.*.mlp.linear_fc1.weight"), nullptr);
    EXPECT_EQ(rule_for(llama, "decoder.layers.*.mlp.linear_fc1.weight")->split, Split::Gated);
    EXPECT_EQ(rule_for(llama, "decoder.layers.*.self_attention.q_layernorm.weight"), nullptr);  // not a Llama tensor
    EXPECT_NE(rule_for(family_of(Arch::OpenSci), "decoder.layers.*.self_attention.q_layernorm.weight"), nullptr);
    EXPECT_EQ(with_layer("model.layers.*.mlp.up_proj.weight", 12), "model.layers.12.mlp.up_proj.weight");
}

}  // namespace
