// The mapping is checked by simulation: HF tensors with unique element values are split into Megatron shards
// the way Megatron lays them out (fused QKV per query group, [gate_r; up_r] per TP rank, row-parallel column
// blocks, PP/VPP local layer numbering); applying the mapping's copies must give the HF tensors back.
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "common/error.hpp"
#include "model/hf_config.hpp"
#include "model/tensor_mapping.hpp"

using namespace m2h;
using namespace m2h::model;

namespace {

struct Dims {
    std::uint64_t L = 4, H = 4, nq = 4, ng = 2, hd = 2, F = 6, V = 8;
    int tp = 2, pp = 1, vpp = 1;
    bool bias = true, qk = true, tied = true;
};

using Tensor = std::vector<float>;

struct World {
    std::map<std::string, Tensor> hf;
    std::map<std::string, std::vector<std::uint64_t>> hf_shape;
    plan::SourceIndex index;
    Tensor memory;  // all source tensors back to back, "file" 0

    void add_source(const std::string& key, const Tensor& data, std::vector<std::uint64_t> shape, int tp, int pp, int chunk) {
        plan::SourceTensor t;
        t.key = key;
        t.dtype = DType::F32;
        t.shape = std::move(shape);
        t.offset = memory.size() * 4;
        t.tp_rank = tp;
        t.pp_rank = pp;
        t.vpp_chunk = chunk;
        memory.insert(memory.end(), data.begin(), data.end());
        index.tensors.push_back(t);
    }
};

Tensor rows_of(const Tensor& t, std::uint64_t cols, std::uint64_t begin, std::uint64_t count) {
    return Tensor(t.begin() + static_cast<std::ptrdiff_t>(begin * cols), t.begin() + static_cast<std::ptrdiff_t>((begin + count) * cols));
}

Tensor cols_of(const Tensor& t, std::uint64_t rows, std::uint64_t cols, std::uint64_t begin, std::uint64_t count) {
    Tensor out;
    for (std::uint64_t r = 0; r < rows; ++r)
        for (std::uint64_t c = begin; c < begin + count; ++c) out.push_back(t[r * cols + c]);
    return out;
}

World make_world(const Dims& d) {
    World w;
    float next = 1;
    auto make = [&](const std::string& name, std::vector<std::uint64_t> shape) {
        const auto n = std::accumulate(shape.begin(), shape.end(), std::uint64_t{1}, std::multiplies<>());
        Tensor t(n);
        for (auto& x : t) x = next++;
        w.hf[name] = t;
        w.hf_shape[name] = shape;
        return t;
    };
    const std::uint64_t G = d.nq / d.ng, t = static_cast<std::uint64_t>(d.tp), H = d.H;
    const auto emb = make("model.embed_tokens.weight", {d.V, H});
    for (int r = 0; r < d.tp; ++r)
        w.add_source("embedding.word_embeddings.weight", rows_of(emb, H, r * d.V / t, d.V / t), {d.V / t, H}, r, 0, d.vpp > 1 ? 0 : -1);
    const std::uint64_t per_chunk = d.L / static_cast<std::uint64_t>(d.pp * d.vpp);
    for (std::uint64_t layer = 0; layer < d.L; ++layer) {
        const std::uint64_t c = layer / (d.L / d.vpp), s = (layer % (d.L / d.vpp)) / per_chunk, local = layer % per_chunk;
        const int chunk = d.vpp > 1 ? static_cast<int>(c) : -1;
        const std::string p = "model.layers." + std::to_string(layer) + ".", m = "decoder.layers." + std::to_string(local) + ".";
        auto src = [&](const std::string& key, const Tensor& data, std::vector<std::uint64_t> shape, int r) {
            w.add_source(m + key, data, std::move(shape), r, static_cast<int>(s), chunk);
        };
        for (const bool bias : {false, true}) {
            if (bias && !d.bias) break;
            const std::uint64_t cols = bias ? 1 : H;
            const std::string sfx = bias ? ".bias" : ".weight";
            auto shape = [&](std::uint64_t rows) { return bias ? std::vector<std::uint64_t>{rows} : std::vector<std::uint64_t>{rows, H}; };
            const auto q = make(p + "self_attn.q_proj" + sfx, shape(d.nq * d.hd));
            const auto k = make(p + "self_attn.k_proj" + sfx, shape(d.ng * d.hd));
            const auto v = make(p + "self_attn.v_proj" + sfx, shape(d.ng * d.hd));
            Tensor fused;
            for (std::uint64_t g = 0; g < d.ng; ++g)
                for (const auto& part : {rows_of(q, cols, g * G * d.hd, G * d.hd), rows_of(k, cols, g * d.hd, d.hd), rows_of(v, cols, g * d.hd, d.hd)})
                    fused.insert(fused.end(), part.begin(), part.end());
            const std::uint64_t R = (d.nq + 2 * d.ng) * d.hd;
            for (int r = 0; r < d.tp; ++r)
                src(std::string("self_attention.linear_qkv") + sfx, rows_of(fused, cols, r * R / t, R / t), shape(R / t), r);
            const auto gate = make(p + "mlp.gate_proj" + sfx, bias ? std::vector<std::uint64_t>{d.F} : std::vector<std::uint64_t>{d.F, H});
            const auto up = make(p + "mlp.up_proj" + sfx, bias ? std::vector<std::uint64_t>{d.F} : std::vector<std::uint64_t>{d.F, H});
            for (int r = 0; r < d.tp; ++r) {
                auto fc1 = rows_of(gate, cols, r * d.F / t, d.F / t);
                const auto u = rows_of(up, cols, r * d.F / t, d.F / t);
                fc1.insert(fc1.end(), u.begin(), u.end());
                src(std::string("mlp.linear_fc1") + sfx, fc1, shape(2 * d.F / t), r);
            }
        }
        const auto o = make(p + "self_attn.o_proj.weight", {H, d.nq * d.hd});
        const auto down = make(p + "mlp.down_proj.weight", {H, d.F});
        for (int r = 0; r < d.tp; ++r) {
            src("self_attention.linear_proj.weight", cols_of(o, H, d.nq * d.hd, r * d.nq * d.hd / t, d.nq * d.hd / t), {H, d.nq * d.hd / t}, r);
            src("mlp.linear_fc2.weight", cols_of(down, H, d.F, r * d.F / t, d.F / t), {H, d.F / t}, r);
        }
        std::vector<std::pair<std::string, std::string>> replicated{
            {"input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"},
            {"post_attention_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"}};
        if (d.bias) {
            replicated.push_back({"self_attn.o_proj.bias", "self_attention.linear_proj.bias"});
            replicated.push_back({"mlp.down_proj.bias", "mlp.linear_fc2.bias"});
        }
        for (const auto& [hf, meg] : replicated) {
            const auto n = make(p + hf, {H});
            for (int r = 0; r < d.tp; ++r) src(meg, n, {H}, r);
        }
        if (d.qk)
            for (const auto& [hf, meg] : {std::pair{"self_attn.q_layernorm.weight", "self_attention.q_layernorm.weight"},
                                          std::pair{"self_attn.k_layernorm.weight", "self_attention.k_layernorm.weight"}}) {
                const auto n = make(p + hf, {d.hd});
                for (int r = 0; r < d.tp; ++r) src(meg, n, {d.hd}, r);
            }
    }
    const int last = d.pp - 1, last_chunk = d.vpp > 1 ? d.vpp - 1 : -1;
    const auto norm = make("model.norm.weight", {H});
    for (int r = 0; r < d.tp; ++r) w.add_source("decoder.final_layernorm.weight", norm, {H}, r, last, last_chunk);
    if (!d.tied) {
        const auto head = make("lm_head.weight", {d.V, H});
        for (int r = 0; r < d.tp; ++r)
            w.add_source("output_layer.weight", rows_of(head, H, r * d.V / t, d.V / t), {d.V / t, H}, r, last, last_chunk);
    }
    w.index.files = {plan::SourceFile{"memory"}};
    w.index.args = {{"num_layers", d.L},
                    {"hidden_size", d.H},
                    {"num_attention_heads", d.nq},
                    {"group_query_attention", d.ng != d.nq},
                    {"num_query_groups", d.ng},
                    {"kv_channels", d.hd},
                    {"ffn_hidden_size", d.F},
                    {"padded_vocab_size", d.V},
                    {"tensor_model_parallel_size", d.tp},
                    {"pipeline_model_parallel_size", d.pp},
                    {"virtual_pipeline_model_parallel_size", d.vpp > 1 ? nlohmann::json(d.vpp) : nlohmann::json(nullptr)},
                    {"swiglu", true},
                    {"normalization", "RMSNorm"},
                    {"position_embedding_type", "rope"},
                    {"add_bias_linear", d.bias},
                    {"qk_layernorm", d.qk},
                    {"untie_embeddings_and_output_weights", !d.tied},
                    {"bf16", false}};
    return w;
}

std::map<std::string, Tensor> apply(const World& w, const Mapping& m) {
    std::map<std::string, Tensor> out;
    std::vector<Tensor> tensors;
    for (const auto& t : m.outputs) tensors.emplace_back(t.nbytes() / 4, -1.0f);
    for (const auto& c : m.copies) {
        const auto base = w.index.tensors[c.src].offset / 4;
        for (std::uint64_t r = 0; r < c.rows; ++r)
            for (std::uint64_t k = 0; k < c.cols; ++k) {
                const float v = w.memory[base + c.src_offset + r * c.src_pitch + k];
                float& slot = tensors[c.dst][c.dst_offset + r * c.dst_pitch + k];
                if (c.verify_only)
                    EXPECT_EQ(slot, v);
                else {
                    EXPECT_EQ(slot, -1.0f) << "element written twice in " << m.outputs[c.dst].name;
                    slot = v;
                }
            }
    }
    for (std::size_t i = 0; i < m.outputs.size(); ++i) out[m.outputs[i].name] = tensors[i];
    return out;
}

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
             {"num_experts", 8}, {"rotary_interleaved", true}, {"apply_layernorm_1p", true},
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
