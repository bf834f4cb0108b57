// Mixture-of-experts checkpoints, simulated as Megatron saves them (legacy rank files: routed experts as local
// experts of their EP rank, the dense part repeated in every EP rank's file), mapped back to the HF tensors.
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "formats/legacy_checkpoint.hpp"
#include "model/hf_config.hpp"
#include "model/tensor_mapping.hpp"
#include "simulated_checkpoint.hpp"

using namespace m2h;
using namespace m2h::model;
using namespace m2h::testing;

namespace {

Dims moe(std::uint64_t experts, int ep, bool qk) {
    Dims d;
    d.bias = false;
    d.qk = qk;
    d.tied = false;
    d.experts = experts;
    d.ep = ep;
    return d;
}

void expect_round_trip(const Dims& d, Arch arch) {
    const auto w = make_world(d);
    const auto spec = model_spec_from_args(w.index.args, {}, "test");
    EXPECT_EQ(spec.arch, arch);
    const auto m = map_tensors(spec, w.index, {});
    const auto got = apply(w, m);
    ASSERT_EQ(got.size(), w.hf.size());
    for (const auto& t : m.outputs) EXPECT_EQ(t.shape, w.hf_shape.at(t.name)) << t.name;
    for (const auto& [name, data] : w.hf) EXPECT_EQ(got.at(name), data) << name;
}

std::string error_of(const World& w) {
    try {
        map_tensors(model_spec_from_args(w.index.args, {}, "test"), w.index, {});
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(MoeMapping, Qwen3MoeTp2Pp2Ep2) {
    auto d = moe(4, 2, true);
    d.pp = 2;
    expect_round_trip(d, Arch::Qwen3Moe);
}

TEST(MoeMapping, MixtralTeGroupedExpertNamesEp4) {
    auto d = moe(8, 4, false);
    d.expert_names = ExpertNames::TeGrouped;
    expect_round_trip(d, Arch::Mixtral);
}

TEST(MoeMapping, Qwen2MoeSharedExpertWithGate) {
    auto d = moe(4, 2, false);
    d.bias = d.qkv_bias_only = true;
    d.shared_F = 4;
    expect_round_trip(d, Arch::Qwen2Moe);
}

TEST(MoeMapping, ExpertsFirstInStateDictOrderAfterTheRouter) {
    const auto w = make_world(moe(2, 1, false));
    const auto m = map_tensors(model_spec_from_args(w.index.args, {}, "t"), w.index, {});
    std::vector<std::string> layer0;
    for (const auto& t : m.outputs)
        if (t.name.starts_with("model.layers.0.block_sparse_moe")) layer0.push_back(t.name);
    const std::vector<std::string> want{
        "model.layers.0.block_sparse_moe.gate.weight",        "model.layers.0.block_sparse_moe.experts.0.w1.weight",
        "model.layers.0.block_sparse_moe.experts.0.w2.weight", "model.layers.0.block_sparse_moe.experts.0.w3.weight",
        "model.layers.0.block_sparse_moe.experts.1.w1.weight", "model.layers.0.block_sparse_moe.experts.1.w2.weight",
        "model.layers.0.block_sparse_moe.experts.1.w3.weight"};
    EXPECT_EQ(layer0, want);
}

TEST(MoeMapping, MissingExpertRankNamesTheExpertTensor) {
    auto w = make_world(moe(4, 2, true));
    std::erase_if(w.index.tensors, [](const auto& t) { return t.ep_rank == 1; });
    const auto msg = error_of(w);
    EXPECT_NE(msg.find("decoder.layers.0.mlp.experts.2.linear_fc1.weight: missing"), std::string::npos) << msg;
}

TEST(MoeMapping, LocalExpertBeyondItsRankIsAnError) {
    auto w = make_world(moe(4, 2, true));
    for (auto& t : w.index.tensors)
        if (t.key == "decoder.layers.1.mlp.experts.local_experts.1.linear_fc2.weight" && t.ep_rank == 1)
            t.key = "decoder.layers.1.mlp.experts.local_experts.2.linear_fc2.weight";
    const auto msg = error_of(w);
    EXPECT_NE(msg.find("local expert 2 of expert-parallel rank 1 does not fit 4 experts"), std::string::npos) << msg;
}

TEST(MoeMapping, DenseCopiesInOtherExpertRanksAreCompared) {
    auto w = make_world(moe(4, 2, true));
    const auto m = map_tensors(model_spec_from_args(w.index.args, {}, "t"), w.index, {});
    std::size_t compared = 0;
    for (const auto& c : m.copies) compared += c.verify_only && w.index.tensors[c.src].ep_rank == 1;
    EXPECT_GT(compared, 0u);
    for (const auto& c : m.copies)  // routed experts exist once: never a replica
        if (w.index.tensors[c.src].key.find("local_experts") != std::string::npos) EXPECT_FALSE(c.verify_only);
}

TEST(MoeMapping, LegacyNeedsExpertTpEqualToTp) {
    auto w = make_world(moe(4, 2, true));
    w.index.args["expert_tensor_parallel_size"] = 1;
    EXPECT_NE(error_of(w).find("expert_tensor_parallel_size 1 differs from tensor_model_parallel_size 2"), std::string::npos);
}

TEST(MoeSpec, RoutingThatHfDoesNotComputeIsRefused) {
    const auto args = make_world(moe(4, 2, true)).index.args;
    const auto spec = model_spec_from_args(args, {}, "t");
    EXPECT_EQ(spec.moe.num_experts, 4u);
    EXPECT_EQ(spec.moe.local_experts(), 2u);
    EXPECT_EQ(spec.moe.etp, 2);  // expert_tensor_parallel_size defaults to TP
    for (const auto& [k, v] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"moe_router_score_function", "sigmoid"}, {"moe_router_enable_expert_bias", true},
             {"moe_layer_freq", 2}, {"moe_layer_freq", {1, 0, 1, 0}}, {"moe_router_num_groups", 2},
             {"moe_router_topk_scaling_factor", 2.5}, {"num_experts", 3}, {"moe_router_load_balancing_type", "sinkhorn"},
             {"moe_expert_capacity_factor", 1.0}}) {
        auto bad = args;
        bad[k] = v;
        EXPECT_THROW(model_spec_from_args(bad, {}, "t"), Error) << k << " " << v.dump();
    }
    auto every_layer = args;
    every_layer["moe_layer_freq"] = {1, 1, 1, 1};
    EXPECT_EQ(model_spec_from_args(every_layer, {}, "t").arch, Arch::Qwen3Moe);
}

TEST(MoeSpec, PreSoftmaxRoutingIsQwensUnnormalisedTopK) {
    auto args = make_world(moe(4, 2, true)).index.args;
    args["moe_router_pre_softmax"] = true;
    const auto spec = model_spec_from_args(args, {}, "t");
    EXPECT_EQ(hf_config(spec, args, 8, DType::F32)["norm_topk_prob"], false);
    auto mixtral = make_world(moe(4, 2, false)).index.args;
    mixtral["moe_router_pre_softmax"] = true;  // Mixtral always renormalises
    EXPECT_THROW(model_spec_from_args(mixtral, {}, "t"), Error);
}

TEST(MoeSpec, SharedExpertNeedsItsGateForQwen2Moe) {
    auto d = moe(4, 2, false);
    d.bias = d.qkv_bias_only = true;
    d.shared_F = 4;
    auto args = make_world(d).index.args;
    EXPECT_EQ(model_spec_from_args(args, {}, "t").arch, Arch::Qwen2Moe);
    args["moe_shared_expert_gate"] = false;
    try {
        model_spec_from_args(args, {}, "ckpt.pt");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("qwen2_moe: no gated shared expert"), std::string::npos) << e.what();
    }
}

TEST(LegacyRankFiles, TwoNumbersAreExpertRanksWhenPpIsOne) {
    const nlohmann::json args = {{"tensor_model_parallel_size", 1}, {"pipeline_model_parallel_size", 1},
                                 {"expert_model_parallel_size", 2}, {"num_experts", 4}};
    std::vector<formats::LegacyRankFile> files{{"/c/iter_0000001/mp_rank_00_000/model_optim_rng.pt", 0, 0, 0, 2},
                                               {"/c/iter_0000001/mp_rank_00_001/model_optim_rng.pt", 0, 1, 0, 2}};
    std::vector<tensors::SourceIndex> parts(2);
    for (std::size_t i = 0; i < 2; ++i) {
        parts[i].args = args;
        parts[i].tensors.push_back({});
    }
    const auto index = formats::merge_legacy_indexes(files, parts);
    EXPECT_EQ(index.tensors[1].ep_rank, 1);
    EXPECT_EQ(index.tensors[1].pp_rank, 0);
    files.pop_back();
    parts.pop_back();
    try {
        formats::merge_legacy_indexes(files, parts);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("mp_rank_00_001/model_optim_rng.pt: missing rank file (TP 1 x PP 1 x EP 2"),
                  std::string::npos) << e.what();
    }
}
