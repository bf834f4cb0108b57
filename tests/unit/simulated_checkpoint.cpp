#include "simulated_checkpoint.hpp"

namespace m2h::testing {
namespace {

class Builder {
public:
    explicit Builder(const Dims& d) : d_(d), t_(static_cast<std::uint64_t>(d.tp)) {}

    World build() {
        const auto H = d_.H;
        const auto emb = make("model.embed_tokens.weight", {d_.V, H});
        for (int r = 0; r < d_.tp; ++r)
            dense("embedding.word_embeddings.weight", rows_of(emb, H, r * d_.V / t_, d_.V / t_), {d_.V / t_, H}, r, 0,
                  d_.vpp > 1 ? 0 : -1);
        for (std::uint64_t layer = 0; layer < d_.L; ++layer) add_layer(layer);
        const int last = d_.pp - 1, last_chunk = d_.vpp > 1 ? d_.vpp - 1 : -1;
        const auto norm = make("model.norm.weight", {H});
        for (int r = 0; r < d_.tp; ++r) dense("decoder.final_layernorm.weight", norm, {H}, r, last, last_chunk);
        if (!d_.tied) {
            const auto head = make("lm_head.weight", {d_.V, H});
            for (int r = 0; r < d_.tp; ++r)
                dense("output_layer.weight", rows_of(head, H, r * d_.V / t_, d_.V / t_), {d_.V / t_, H}, r, last, last_chunk);
        }
        w_.index.files = {tensors::SourceFile{"memory"}};
        w_.index.args = args();
        return std::move(w_);
    }

private:
    Tensor make(const std::string& name, std::vector<std::uint64_t> shape) {
        const auto n = std::accumulate(shape.begin(), shape.end(), std::uint64_t{1}, std::multiplies<>());
        Tensor t(n);
        for (auto& x : t) x = next_++;
        w_.hf[name] = t;
        w_.hf_shape[name] = shape;
        return t;
    }

    // A tensor outside the routed experts: every EP rank's file holds it.
    void dense(const std::string& key, const Tensor& data, std::vector<std::uint64_t> shape, int tp, int pp, int chunk) {
        for (int e = 0; e < d_.ep; ++e) w_.add_source(key, data, shape, tp, pp, chunk, e);
    }

    void add_layer(std::uint64_t layer) {
        const auto H = d_.H, G = d_.nq / d_.ng;
        const std::uint64_t per_chunk = d_.L / static_cast<std::uint64_t>(d_.pp * d_.vpp);
        const std::uint64_t c = layer / (d_.L / d_.vpp), s = (layer % (d_.L / d_.vpp)) / per_chunk, local = layer % per_chunk;
        stage_ = static_cast<int>(s);
        chunk_ = d_.vpp > 1 ? static_cast<int>(c) : -1;
        p_ = "model.layers." + std::to_string(layer) + ".";
        m_ = "decoder.layers." + std::to_string(local) + ".";
        auto src = [&](const std::string& key, const Tensor& data, std::vector<std::uint64_t> shape, int r) {
            dense(m_ + key, data, std::move(shape), r, stage_, chunk_);
        };
        const bool mlp_bias = d_.bias && !d_.qkv_bias_only;
        for (const bool bias : {false, true}) {
            if (bias && !d_.bias) break;
            const std::uint64_t cols = bias ? 1 : H;
            const std::string sfx = bias ? ".bias" : ".weight";
            auto shape = [&](std::uint64_t rows) { return bias ? std::vector<std::uint64_t>{rows} : std::vector<std::uint64_t>{rows, H}; };
            const auto q = make(p_ + "self_attn.q_proj" + sfx, shape(d_.nq * d_.hd));
            const auto k = make(p_ + "self_attn.k_proj" + sfx, shape(d_.ng * d_.hd));
            const auto v = make(p_ + "self_attn.v_proj" + sfx, shape(d_.ng * d_.hd));
            Tensor fused;
            for (std::uint64_t g = 0; g < d_.ng; ++g)
                for (const auto& part : {rows_of(q, cols, g * G * d_.hd, G * d_.hd), rows_of(k, cols, g * d_.hd, d_.hd), rows_of(v, cols, g * d_.hd, d_.hd)})
                    fused.insert(fused.end(), part.begin(), part.end());
            const std::uint64_t R = (d_.nq + 2 * d_.ng) * d_.hd;
            for (int r = 0; r < d_.tp; ++r)
                src(std::string("self_attention.linear_qkv") + sfx, rows_of(fused, cols, r * R / t_, R / t_), shape(R / t_), r);
            if (d_.experts || (bias && !mlp_bias)) continue;
            const auto gate = make(p_ + "mlp.gate_proj" + sfx, shape(d_.F));
            const auto up = make(p_ + "mlp.up_proj" + sfx, shape(d_.F));
            for (int r = 0; r < d_.tp; ++r) src(std::string("mlp.linear_fc1") + sfx, gated_shard(gate, up, cols, d_.F / t_, r), shape(2 * d_.F / t_), r);
        }
        const auto o = make(p_ + "self_attn.o_proj.weight", {H, d_.nq * d_.hd});
        for (int r = 0; r < d_.tp; ++r)
            src("self_attention.linear_proj.weight", cols_of(o, H, d_.nq * d_.hd, r * d_.nq * d_.hd / t_, d_.nq * d_.hd / t_), {H, d_.nq * d_.hd / t_}, r);
        if (d_.experts) {
            add_experts();
        } else {
            const auto down = make(p_ + "mlp.down_proj.weight", {H, d_.F});
            for (int r = 0; r < d_.tp; ++r) src("mlp.linear_fc2.weight", cols_of(down, H, d_.F, r * d_.F / t_, d_.F / t_), {H, d_.F / t_}, r);
        }
        std::vector<std::pair<std::string, std::string>> replicated{
            {"input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"},
            {"post_attention_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"}};
        if (mlp_bias) {
            replicated.push_back({"self_attn.o_proj.bias", "self_attention.linear_proj.bias"});
            replicated.push_back({"mlp.down_proj.bias", "mlp.linear_fc2.bias"});
        }
        for (const auto& [hf, meg] : replicated) {
            const auto n = make(p_ + hf, {H});
            for (int r = 0; r < d_.tp; ++r) src(meg, n, {H}, r);
        }
        if (d_.qk)
            for (const auto& [hf, meg] : {std::pair{"self_attn.q_norm.weight", "self_attention.q_layernorm.weight"},
                                          std::pair{"self_attn.k_norm.weight", "self_attention.k_layernorm.weight"}}) {
                // Open-Sci spells them q_layernorm / k_layernorm, the Qwen families q_norm / k_norm.
                const std::string name = d_.experts ? hf : std::string(hf).replace(std::string(hf).find("_norm"), 5, "_layernorm");
                const auto n = make(p_ + name, {d_.hd});
                for (int r = 0; r < d_.tp; ++r) src(meg, n, {d_.hd}, r);
            }
    }

    // The router, every routed expert on its EP rank as a local expert, and the shared expert with its gate.
    void add_experts() {
        const auto H = d_.H, E = d_.experts, per_rank = E / static_cast<std::uint64_t>(d_.ep), f = d_.moe_F / t_;
        const bool mixtral = !d_.qk && !d_.bias;  // Qwen3-MoE has q/k norms, Qwen2-MoE q/k/v biases
        const std::string block = mixtral ? "block_sparse_moe." : "mlp.";
        const auto router = make(p_ + block + "gate.weight", {E, H});
        for (int r = 0; r < d_.tp; ++r) dense(m_ + "mlp.router.weight", router, {E, H}, r, stage_, chunk_);
        for (std::uint64_t x = 0; x < E; ++x) {
            const std::string e = p_ + block + "experts." + std::to_string(x) + ".";
            const auto gate = make(e + (mixtral ? "w1" : "gate_proj") + ".weight", {d_.moe_F, H});
            const auto down = make(e + (mixtral ? "w2" : "down_proj") + ".weight", {H, d_.moe_F});
            const auto up = make(e + (mixtral ? "w3" : "up_proj") + ".weight", {d_.moe_F, H});
            const auto j = std::to_string(x % per_rank);
            const int ep = static_cast<int>(x / per_rank);
            auto key = [&](const std::string& linear) {
                return m_ + (d_.expert_names == ExpertNames::Sequential ? "mlp.experts.local_experts." + j + "." + linear + ".weight"
                                                                        : "mlp.experts." + linear + ".weight" + j);
            };
            for (int r = 0; r < d_.tp; ++r) {
                w_.add_source(key("linear_fc1"), gated_shard(gate, up, H, f, r), {2 * f, H}, r, stage_, chunk_, ep);
                w_.add_source(key("linear_fc2"), cols_of(down, H, d_.moe_F, r * f, f), {H, f}, r, stage_, chunk_, ep);
            }
        }
        if (!d_.shared_F) return;
        const auto gate = make(p_ + "mlp.shared_expert.gate_proj.weight", {d_.shared_F, H});
        const auto up = make(p_ + "mlp.shared_expert.up_proj.weight", {d_.shared_F, H});
        const auto down = make(p_ + "mlp.shared_expert.down_proj.weight", {H, d_.shared_F});
        const auto sigmoid_gate = make(p_ + "mlp.shared_expert_gate.weight", {1, H});
        const auto fs = d_.shared_F / t_;
        for (int r = 0; r < d_.tp; ++r) {
            dense(m_ + "mlp.shared_experts.linear_fc1.weight", gated_shard(gate, up, H, fs, r), {2 * fs, H}, r, stage_, chunk_);
            dense(m_ + "mlp.shared_experts.linear_fc2.weight", cols_of(down, H, d_.shared_F, r * fs, fs), {H, fs}, r, stage_, chunk_);
            dense(m_ + "mlp.shared_experts.gate_weight", sigmoid_gate, {1, H}, r, stage_, chunk_);
        }
    }

    nlohmann::json args() const {
        nlohmann::json a = {{"num_layers", d_.L},
                            {"hidden_size", d_.H},
                            {"num_attention_heads", d_.nq},
                            {"group_query_attention", d_.ng != d_.nq},
                            {"num_query_groups", d_.ng},
                            {"kv_channels", d_.hd},
                            {"ffn_hidden_size", d_.F},
                            {"padded_vocab_size", d_.V},
                            {"tensor_model_parallel_size", d_.tp},
                            {"pipeline_model_parallel_size", d_.pp},
                            {"virtual_pipeline_model_parallel_size", d_.vpp > 1 ? nlohmann::json(d_.vpp) : nlohmann::json(nullptr)},
                            {"swiglu", true},
                            {"normalization", "RMSNorm"},
                            {"position_embedding_type", "rope"},
                            {"add_bias_linear", d_.bias && !d_.qkv_bias_only},
                            {"qk_layernorm", d_.qk},
                            {"untie_embeddings_and_output_weights", !d_.tied},
                            {"bf16", false}};
        if (d_.qkv_bias_only) a["add_qkv_bias"] = true;
        if (d_.experts) {
            a["num_experts"] = d_.experts;
            a["moe_router_topk"] = 2;
            a["moe_ffn_hidden_size"] = d_.moe_F;
            a["expert_model_parallel_size"] = d_.ep;
            if (d_.shared_F) {
                a["moe_shared_expert_intermediate_size"] = d_.shared_F;
                a["moe_shared_expert_gate"] = true;
            }
        }
        return a;
    }

    const Dims& d_;
    const std::uint64_t t_;
    World w_;
    float next_ = 1;
    int stage_ = 0, chunk_ = -1;
    std::string p_, m_;  // the layer's HF and Megatron name prefixes
};

}  // namespace

World make_world(const Dims& d) { return Builder(d).build(); }

std::map<std::string, Tensor> apply(const World& w, const model::Mapping& m) {
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

}  // namespace m2h::testing
