// The mapping is checked by simulation: HF tensors with unique element values are split into Megatron shards
// the way Megatron lays them out (fused QKV per query group, [gate_r; up_r] per TP rank, row-parallel column
// blocks, PP/VPP local layer numbering); applying the mapping's copies must give the HF tensors back.
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "common/error.hpp"
#include "model/hf_config.hpp"
#include "model/tensor_mapping.hpp"
#include "simulated_checkpoint.hpp"

using namespace m2h;
using namespace m2h::model;
using namespace m2h::testing;

namespace {

void expect_round_trip(const Dims& d) {
    const auto w = make_world(d);
    const auto spec = model_spec_from_args(w.index.args, {}, "test");
    const auto m = map_tensors(spec, w.index, {});
    const auto got = apply(w, m);
    ASSERT_EQ(got.size(), w.hf.size());
    for (const auto& t : m.outputs) EXPECT_EQ(t.shape, w.hf_shape.at(t.name)) << t.name;
    for (const auto& [name, data] : w.hf) EXPECT_EQ(got.at(name), data) << name;
}

}  // namespace

TEST(TensorMapping, OpenSciTp2) { expect_round_trip({}); }
TEST(TensorMapping, LlamaGqaTp2Pp2Untied) {
    Dims d;
    d.bias = d.qk = d.tied = false;
    d.nq = 8;
    d.ng = 2;
    d.pp = 2;
    expect_round_trip(d);
}
TEST(TensorMapping, FewerGroupsThanTpRanks) {
    Dims d;
    d.tp = 4;
    d.ng = 2;
    d.F = 8;
    d.bias = d.qk = d.tied = false;
    expect_round_trip(d);
}
TEST(TensorMapping, VirtualPipelineChunks) {
    Dims d;
    d.L = 8;
    d.pp = 2;
    d.vpp = 2;
    expect_round_trip(d);
}

TEST(TensorMapping, StateDictOrderDecidesShards) {
    const auto w = make_world({});
    const auto m = map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {});
    ASSERT_GE(m.outputs.size(), 4u);
    EXPECT_EQ(m.outputs.front().name, "model.embed_tokens.weight");
    EXPECT_EQ(m.outputs[1].name, "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(m.outputs[2].name, "model.layers.0.self_attn.q_proj.bias");
    EXPECT_EQ(m.outputs.back().name, "model.norm.weight");
}

TEST(TensorMapping, VocabTrimKeepsLeadingRows) {
    Dims d;
    d.tied = false;
    d.bias = d.qk = false;
    const auto w = make_world(d);
    const auto m = map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {std::nullopt, 5});
    const auto got = apply(w, m);
    const auto& full = w.hf.at("model.embed_tokens.weight");
    EXPECT_EQ(got.at("model.embed_tokens.weight"), Tensor(full.begin(), full.begin() + 5 * static_cast<std::ptrdiff_t>(d.H)));
    EXPECT_THROW(map_tensors(model_spec_from_args(w.index.args, {}, "t"), w.index, {std::nullopt, 9}), Error);
}

TEST(TensorMapping, RefusesToDropUnknownTensors) {
    auto w = make_world({});
    w.add_source("decoder.layers.0.self_attention.linear_qkv.layer_norm_bias", Tensor(4), {4}, 0, 0, -1);
    try {
        map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {});
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("layer_norm_bias"), std::string::npos);
    }
}

TEST(TensorMapping, NamesTheTensorAndBothShapesOnMismatch) {
    auto w = make_world({});
    for (auto& t : w.index.tensors)
        if (t.key == "decoder.layers.1.mlp.linear_fc2.weight" && t.tp_rank == 1) t.shape = {4, 2};
    try {
        map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {});
        FAIL() << "expected an error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("decoder.layers.1.mlp.linear_fc2.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[4, 2]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("[4, 3]"), std::string::npos) << msg;
    }
}

TEST(TensorMapping, MissingShardIsAnError) {
    auto w = make_world({});
    w.index.tensors.erase(w.index.tensors.begin() + 3);
    EXPECT_THROW(map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {}), Error);
}

TEST(ModelSpec, AutoArchAndUnsupportedFeatures) {
    auto w = make_world({});
    EXPECT_EQ(model_spec_from_args(w.index.args, {}, "t").arch, Arch::OpenSci);
    auto args = w.index.args;
    args["add_bias_linear"] = false;
    args["qk_layernorm"] = false;
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Llama);
    args["qk_layernorm"] = true;  // q/k norms without biases: Qwen3
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Qwen3);
    EXPECT_EQ(model_spec_from_args(args, {"opensci", std::nullopt}, "t").arch, Arch::OpenSci);
    EXPECT_THROW(model_spec_from_args(args, {"llama", std::nullopt}, "t"), Error);
    args["qk_layernorm"] = false;
    args["add_qkv_bias"] = true;  // biases on q/k/v only: Qwen2
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Qwen2);
    EXPECT_THROW(model_spec_from_args(args, {"qwen3", std::nullopt}, "t"), Error);
    args["add_bias_linear"] = true;  // biases everywhere, no q/k norms: Llama's attention_bias / mlp_bias
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Llama);
    args["add_bias_linear"] = false;
    args["add_qkv_bias"] = false;
    args["window_size"] = {4, 0};  // as Megatron pickles the tuple
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Mistral);
    EXPECT_EQ(*model_spec_from_args(args, {}, "t").window, 4u);
    args["window_attn_skip_freq"] = 2;  // windows on some layers only
    EXPECT_THROW(model_spec_from_args(args, {}, "t"), Error);
    for (const auto& [k, v] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"normalization", "LayerNorm"}, {"swiglu", false}, {"position_embedding_type", "learned_absolute"},
             {"mtp_num_layers", 1}, {"rotary_interleaved", true}, {"apply_layernorm_1p", true},
             {"layernorm_zero_centered_gamma", true}, {"qk_l2_norm", true}, {"no_rope_freq", 4},
             {"rope_type", "yarn"}, {"window_size", {4096, 0}}}) {
        auto bad = w.index.args;
        bad[k] = v;
        try {
            model_spec_from_args(bad, {}, "ckpt.pt");
            FAIL() << k;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("ckpt.pt"), std::string::npos);
        }
    }
    auto mha = w.index.args;
    mha["group_query_attention"] = false;
    mha["num_query_groups"] = 1;  // Megatron's default is kept in args even without GQA
    EXPECT_EQ(model_spec_from_args(mha, {}, "t").num_query_groups, 4u);
}

TEST(HfConfig, NormEpsilonUnderEitherArgName) {
    auto w = make_world({});
    auto args = w.index.args;
    const auto spec = model_spec_from_args(args, {}, "t");
    args.erase("norm_epsilon");
    EXPECT_EQ(hf_config(spec, args, 8, DType::F32)["rms_norm_eps"], 1e-5);  // Megatron's default
    args["layernorm_epsilon"] = 1e-6;  // megatron-core 0.16 and later
    EXPECT_EQ(hf_config(spec, args, 8, DType::F32)["rms_norm_eps"], 1e-6);
    args["norm_epsilon"] = 2e-6;  // older Megatron-LM
    EXPECT_EQ(hf_config(spec, args, 8, DType::F32)["rms_norm_eps"], 2e-6);
}

TEST(ModelSpec, KeyValueHeadOverrideAndDtype) {
    auto w = make_world({});
    auto args = w.index.args;
    args["group_query_attention"] = false;
    EXPECT_EQ(model_spec_from_args(args, {"auto", 2}, "t").num_query_groups, 2u);
    EXPECT_THROW(model_spec_from_args(args, {"auto", 3}, "t"), Error);  // 4 heads do not split into 3 groups
    args["bf16"] = true;
    EXPECT_EQ(model_spec_from_args(args, {}, "t").params_dtype, DType::BF16);
    EXPECT_THROW(model_spec_from_args(args, {"gpt2", std::nullopt}, "t"), Error);
}
