#include "model/tensor_mapping.hpp"

#include <algorithm>
#include <charconv>
#include <set>
#include <tuple>

#include "common/error.hpp"
#include "model/global_tensors.hpp"

namespace m2h::model {
namespace {

using Shape = std::vector<std::uint64_t>;

std::string layer_key(std::uint64_t layer, const char* suffix) {
    return "decoder.layers." + std::to_string(layer) + "." + suffix;
}

class Builder {
public:
    Builder(const ModelSpec& spec, const plan::SourceIndex& index, const MappingOptions& options)
        : s_(spec), index_(index), options_(options) {}

    Mapping build() {
        global_ = global_tensors(s_, index_);
        mapping_.ignored = global_.ignored;
        const std::uint64_t H = s_.hidden_size;
        const std::uint64_t vocab = options_.vocab_size.value_or(s_.padded_vocab_size);
        if (vocab > s_.padded_vocab_size)
            throw Error("--vocab-size", "cannot grow the vocabulary from " + std::to_string(s_.padded_vocab_size) +
                                            " to " + std::to_string(vocab) + " rows");
        mapping_.vocab_size = vocab;

        const auto& emb = need("embedding.word_embeddings.weight");
        rows(emb, 0, vocab, output("model.embed_tokens.weight", emb, {vocab, H}), 0);
        for (std::uint64_t layer = 0; layer < s_.num_layers; ++layer) map_layer(layer);
        whole("decoder.final_layernorm.weight", "model.norm.weight");
        if (!s_.tied_embeddings) {
            const auto& out = need("output_layer.weight");
            rows(out, 0, vocab, output("lm_head.weight", out, {vocab, H}), 0);
        }
        for (const auto& [key, g] : global_.tensors)
            if (!consumed_.count(key))
                throw Error(index_.files[index_.tensors[g.chunks.front().source].file].name() + ": " +
                                index_.tensors[g.chunks.front().source].key,
                            "maps to no Hugging Face tensor of the " + std::string(arch_name(s_.arch)) +
                                " architecture (refusing to drop weights silently)");
        into_state_dict_order();
        return std::move(mapping_);
    }

private:
    const GlobalTensor& need(const std::string& key) {
        auto it = global_.tensors.find(key);
        if (it == global_.tensors.end())
            throw Error(expected_source(s_, index_, key), key + ": missing from the checkpoint");
        consumed_.insert(key);
        return it->second;
    }

    std::uint32_t output(const std::string& name, const GlobalTensor& from, Shape shape) {
        const DType src = index_.tensors[from.chunks.front().source].dtype;
        DType dst = src;
        if (options_.dtype) {
            if (!is_float(src)) throw Error(name, "cannot cast a " + std::string(torch_name(src)) + " tensor");
            dst = *options_.dtype;
        }
        mapping_.outputs.push_back({name, dst, std::move(shape)});
        return static_cast<std::uint32_t>(mapping_.outputs.size() - 1);
    }

    // Global rows [begin, begin+count) of `g` -> rows from dst_row of output `dst` (same width), chunk by chunk.
    void rows(const GlobalTensor& g, std::uint64_t begin, std::uint64_t count, std::uint32_t dst, std::uint64_t dst_row) {
        for (const auto& c : g.chunks) {
            const std::uint64_t r0 = std::max(begin, c.row0), r1 = std::min(begin + count, c.row0 + c.rows);
            if (r0 >= r1) continue;
            mapping_.copies.push_back({c.source, c.source_offset + (r0 - c.row0) * c.cols, c.cols, dst,
                                       (dst_row + r0 - begin) * g.cols + c.col0, g.cols, c.cols, r1 - r0, c.replica});
        }
    }

    void whole(const std::string& key, const std::string& hf) {
        const auto& g = need(key);
        rows(g, 0, g.rows, output(hf, g, g.shape), 0);
    }

    void map_layer(std::uint64_t layer) {
        const std::uint64_t H = s_.hidden_size, hd = s_.head_dim, ng = s_.num_query_groups;
        const std::uint64_t G = s_.heads_per_group(), F = s_.ffn_hidden_size, B = (G + 2) * hd;
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        const std::string attn = p + "self_attn.", mlp = p + "mlp.";

        // Fused QKV: ng group blocks of [G q heads; k head; v head], split per group into q, k and v.
        for (const bool bias : {false, true}) {
            if (bias && !s_.linear_bias) break;
            const std::string sfx = bias ? ".bias" : ".weight";
            const auto& qkv = need(layer_key(layer, bias ? "self_attention.linear_qkv.bias" : "self_attention.linear_qkv.weight"));
            auto shape = [&](std::uint64_t n) { return bias ? Shape{n} : Shape{n, H}; };
            const auto q = output(attn + "q_proj" + sfx, qkv, shape(s_.num_heads * hd));
            const auto k = output(attn + "k_proj" + sfx, qkv, shape(ng * hd));
            const auto v = output(attn + "v_proj" + sfx, qkv, shape(ng * hd));
            for (std::uint64_t g = 0; g < ng; ++g) {
                rows(qkv, g * B, G * hd, q, g * G * hd);
                rows(qkv, g * B + G * hd, hd, k, g * hd);
                rows(qkv, g * B + (G + 1) * hd, hd, v, g * hd);
            }
        }
        whole(layer_key(layer, "self_attention.linear_proj.weight"), attn + "o_proj.weight");
        if (s_.linear_bias) whole(layer_key(layer, "self_attention.linear_proj.bias"), attn + "o_proj.bias");
        if (s_.qk_layernorm) {
            whole(layer_key(layer, "self_attention.q_layernorm.weight"), attn + "q_layernorm.weight");
            whole(layer_key(layer, "self_attention.k_layernorm.weight"), attn + "k_layernorm.weight");
        }
        // SwiGLU fc1 as the global [gate; up] (both formats present it so).
        for (const bool bias : {false, true}) {
            if (bias && !s_.linear_bias) break;
            const std::string sfx = bias ? ".bias" : ".weight";
            const auto& fc1 = need(layer_key(layer, bias ? "mlp.linear_fc1.bias" : "mlp.linear_fc1.weight"));
            const Shape shape = bias ? Shape{F} : Shape{F, H};
            rows(fc1, 0, F, output(mlp + "gate_proj" + sfx, fc1, shape), 0);
            rows(fc1, F, F, output(mlp + "up_proj" + sfx, fc1, shape), 0);
        }
        whole(layer_key(layer, "mlp.linear_fc2.weight"), mlp + "down_proj.weight");
        if (s_.linear_bias) whole(layer_key(layer, "mlp.linear_fc2.bias"), mlp + "down_proj.bias");
        whole(layer_key(layer, "self_attention.linear_qkv.layer_norm_weight"), p + "input_layernorm.weight");
        whole(layer_key(layer, "mlp.linear_fc1.layer_norm_weight"), p + "post_attention_layernorm.weight");
    }

    // The order of the HF model's state_dict() (module registration order, weight before bias): it decides
    // which tensors share a shard file, as in save_pretrained.
    void into_state_dict_order() {
        static const std::vector<std::string_view> modules{
            "self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "self_attn.o_proj.",
            "self_attn.q_layernorm.", "self_attn.k_layernorm.", "mlp.gate_proj.", "mlp.up_proj.",
            "mlp.down_proj.", "input_layernorm.", "post_attention_layernorm."};
        using Rank = std::tuple<int, std::uint64_t, std::size_t, bool>;
        auto rank = [&](const std::string& name) -> Rank {
            constexpr std::string_view layers = "model.layers.";
            if (name == "model.embed_tokens.weight") return {0, 0, 0, false};
            if (name == "model.norm.weight") return {2, 0, 0, false};
            if (!name.starts_with(layers)) return {3, 0, 0, false};
            const auto rest = std::string_view(name).substr(layers.size());
            const auto dot = rest.find('.');
            std::uint64_t layer = 0;
            std::from_chars(rest.data(), rest.data() + dot, layer);
            const auto param = rest.substr(dot + 1);
            std::size_t m = 0;
            while (m < modules.size() && !param.starts_with(modules[m])) ++m;
            return {1, layer, m, param.ends_with(".bias")};
        };
        auto& outs = mapping_.outputs;
        std::vector<std::uint32_t> order(outs.size());
        for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&](std::uint32_t a, std::uint32_t b) { return rank(outs[a].name) < rank(outs[b].name); });
        std::vector<std::uint32_t> new_index(outs.size());
        std::vector<plan::OutputTensor> sorted;
        for (std::uint32_t i = 0; i < order.size(); ++i) {
            new_index[order[i]] = i;
            sorted.push_back(std::move(outs[order[i]]));
        }
        outs = std::move(sorted);
        for (auto& c : mapping_.copies) c.dst = new_index[c.dst];
    }

    const ModelSpec& s_;
    const plan::SourceIndex& index_;
    const MappingOptions& options_;
    GlobalTensors global_;
    std::set<std::string> consumed_;
    Mapping mapping_;
};

}  // namespace

Mapping map_tensors(const ModelSpec& spec, const plan::SourceIndex& index, const MappingOptions& options) {
    return Builder(spec, index, options).build();
}

}  // namespace m2h::model
