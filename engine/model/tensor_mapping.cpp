#include "model/tensor_mapping.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <tuple>

#include "common/error.hpp"

namespace m2h::model {
namespace {

using plan::SourceIndex;
using plan::SourceTensor;
using Shape = std::vector<std::uint64_t>;

enum class Role {
    Embedding, FinalNorm, Output,  // outside the layers
    InputNorm, Qkv, QkvBias, QNorm, KNorm, Proj, ProjBias, PreMlpNorm, Fc1, Fc1Bias, Fc2, Fc2Bias,
};

// Both the TransformerEngine names (norms fused into the following linear) and the local-spec names.
std::optional<Role> layer_role(std::string_view suffix) {
    static const std::map<std::string_view, Role> table{
        {"self_attention.linear_qkv.layer_norm_weight", Role::InputNorm},
        {"input_layernorm.weight", Role::InputNorm},
        {"self_attention.linear_qkv.weight", Role::Qkv},
        {"self_attention.linear_qkv.bias", Role::QkvBias},
        {"self_attention.q_layernorm.weight", Role::QNorm},
        {"self_attention.k_layernorm.weight", Role::KNorm},
        {"self_attention.linear_proj.weight", Role::Proj},
        {"self_attention.linear_proj.bias", Role::ProjBias},
        {"mlp.linear_fc1.layer_norm_weight", Role::PreMlpNorm},
        {"pre_mlp_layernorm.weight", Role::PreMlpNorm},
        {"mlp.linear_fc1.weight", Role::Fc1},
        {"mlp.linear_fc1.bias", Role::Fc1Bias},
        {"mlp.linear_fc2.weight", Role::Fc2},
        {"mlp.linear_fc2.bias", Role::Fc2Bias},
    };
    auto it = table.find(suffix);
    return it == table.end() ? std::nullopt : std::optional(it->second);
}

std::optional<Role> global_role(std::string_view key) {
    if (key == "embedding.word_embeddings.weight") return Role::Embedding;
    if (key == "decoder.final_layernorm.weight" || key == "decoder.final_norm.weight") return Role::FinalNorm;
    if (key == "output_layer.weight") return Role::Output;
    return std::nullopt;
}

struct ParsedKey {
    Role role;
    std::int64_t local_layer = -1;  // -1 outside the layers
};

std::optional<ParsedKey> parse_key(std::string_view key) {
    constexpr std::string_view prefix = "decoder.layers.";
    if (key.starts_with(prefix)) {
        const auto rest = key.substr(prefix.size());
        const auto dot = rest.find('.');
        if (dot == std::string_view::npos || dot == 0) return std::nullopt;
        std::int64_t layer = 0;
        const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, layer);
        if (ec != std::errc() || end != rest.data() + dot) return std::nullopt;
        const auto role = layer_role(rest.substr(dot + 1));
        if (!role) return std::nullopt;
        return ParsedKey{*role, layer};
    }
    const auto role = global_role(key);
    if (!role) return std::nullopt;
    return ParsedKey{*role, -1};
}

std::string shape_text(const Shape& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

std::string where(const SourceIndex& index, const SourceTensor& t) { return index.files.at(t.file) + ": " + t.key; }

class Builder {
public:
    Builder(const ModelSpec& spec, const SourceIndex& index, const MappingOptions& options)
        : s_(spec), index_(index), options_(options), used_(index.tensors.size(), false) {}

    Mapping build() {
        index_keys();
        const std::uint64_t H = s_.hidden_size, t = static_cast<std::uint64_t>(s_.tp);
        const std::uint64_t vocab = options_.vocab_size.value_or(s_.padded_vocab_size);
        if (vocab > s_.padded_vocab_size)
            throw Error("--vocab-size", "cannot grow the vocabulary from " + std::to_string(s_.padded_vocab_size) +
                                            " to " + std::to_string(vocab) + " rows");
        mapping_.vocab_size = vocab;

        const std::string embed = "model.embed_tokens.weight";
        auto emb = shards(Role::Embedding, -1, {s_.padded_vocab_size / t, H}, embed);
        rows_dim0(emb, H, 0, vocab, output(embed, emb, {vocab, H}), 0);

        for (std::uint64_t layer = 0; layer < s_.num_layers; ++layer) map_layer(static_cast<std::int64_t>(layer));

        replicated(Role::FinalNorm, -1, {H}, "model.norm.weight");
        if (!s_.tied_embeddings) {
            const std::string head = "lm_head.weight";
            auto out = shards(Role::Output, -1, {s_.padded_vocab_size / t, H}, head);
            rows_dim0(out, H, 0, vocab, output(head, out, {vocab, H}), 0);
        } else {
            // Megatron keeps a synchronised copy of the embedding on the last stage when PP > 1.
            for (std::size_t i = 0; i < index_.tensors.size(); ++i)
                if (!used_[i] && index_.tensors[i].key == "output_layer.weight") {
                    used_[i] = true;
                    mapping_.ignored.push_back(where(index_, index_.tensors[i]) + " (tied to the embedding)");
                }
        }
        for (std::size_t i = 0; i < index_.tensors.size(); ++i)
            if (!used_[i])
                throw Error(where(index_, index_.tensors[i]),
                            "maps to no Hugging Face tensor of the " + std::string(arch_name(s_.arch)) +
                                " architecture (refusing to drop weights silently)");
        into_state_dict_order();
        return std::move(mapping_);
    }

private:
    using Key = std::tuple<Role, std::int64_t, int>;  // role, global layer, TP rank

    // Global layer index = offset of the file's (chunk, stage) + local index. Offsets come from the layer counts
    // in chunk-major, then stage order, the order the model runs them; the even-split formula must agree.
    void index_keys() {
        std::map<std::pair<int, int>, std::int64_t> count;  // (chunk, stage) -> layers
        std::vector<std::optional<ParsedKey>> parsed(index_.tensors.size());
        for (std::size_t i = 0; i < index_.tensors.size(); ++i) {
            const auto& t = index_.tensors[i];
            parsed[i] = parse_key(t.key);
            if (!parsed[i])
                throw Error(where(index_, t), "unknown Megatron tensor: maps to no Hugging Face tensor "
                                              "(refusing to drop weights silently)");
            if (t.vpp_chunk >= s_.vpp || (s_.vpp > 1 && t.vpp_chunk < 0))
                throw Error(where(index_, t), "model chunk " + std::to_string(t.vpp_chunk) +
                                                  " does not fit virtual_pipeline_model_parallel_size " +
                                                  std::to_string(s_.vpp));
            if (parsed[i]->local_layer >= 0) {
                auto& c = count[{std::max(t.vpp_chunk, 0), t.pp_rank}];
                c = std::max(c, parsed[i]->local_layer + 1);
            }
        }
        std::map<std::pair<int, int>, std::int64_t> offset;
        std::int64_t running = 0;
        const auto L = static_cast<std::int64_t>(s_.num_layers);
        for (int c = 0; c < s_.vpp; ++c)
            for (int st = 0; st < s_.pp; ++st) {
                offset[{c, st}] = running;
                if (s_.even_pipeline && L % (s_.pp * s_.vpp) == 0) {
                    const std::int64_t expected = c * (L / s_.vpp) + st * (L / (s_.pp * s_.vpp));
                    if (running != expected)
                        throw Error("pipeline layout", "layer offset of stage " + std::to_string(st) + " chunk " +
                                                           std::to_string(c) + " is " + std::to_string(running) +
                                                           " from the files but " + std::to_string(expected) +
                                                           " from the args");
                }
                auto it = count.find({c, st});
                running += it == count.end() ? 0 : it->second;
            }
        if (running != L)
            throw Error("pipeline layout", "the rank files hold " + std::to_string(running) +
                                               " transformer layers but args.num_layers is " + std::to_string(L));
        for (std::size_t i = 0; i < index_.tensors.size(); ++i) {
            const auto& t = index_.tensors[i];
            const std::int64_t layer =
                parsed[i]->local_layer < 0 ? -1 : offset[{std::max(t.vpp_chunk, 0), t.pp_rank}] + parsed[i]->local_layer;
            if (!lookup_.emplace(Key{parsed[i]->role, layer, t.tp_rank}, static_cast<std::uint32_t>(i)).second) {
                // A tied legacy model with PP > 1 has output_layer.weight once per TP rank; anything else twice is
                // a damaged checkpoint.
                const auto first = lookup_.at(Key{parsed[i]->role, layer, t.tp_rank});
                throw Error(where(index_, t), "duplicate tensor (also in " + index_.files[index_.tensors[first].file] +
                                                  ")");
            }
        }
    }

    // The TP shards of one Megatron tensor, checked against the shape the args imply and against each other.
    std::vector<std::uint32_t> shards(Role role, std::int64_t layer, const Shape& expected, const std::string& hf) {
        std::vector<std::uint32_t> out;
        for (int r = 0; r < s_.tp; ++r) {
            auto it = lookup_.find(Key{role, layer, r});
            if (it == lookup_.end())
                throw Error(hf, "missing source shard for TP rank " + std::to_string(r) +
                                    (layer >= 0 ? " of layer " + std::to_string(layer) : std::string()));
            const auto& t = index_.tensors[it->second];
            if (t.shape != expected)
                throw Error(where(index_, t), "shape " + shape_text(t.shape) + " but the args imply " +
                                                  shape_text(expected) + " (for " + hf + ")");
            if (t.dtype != index_.tensors[out.empty() ? it->second : out.front()].dtype)
                throw Error(where(index_, t), "dtype disagrees across TP ranks");
            used_[it->second] = true;
            out.push_back(it->second);
        }
        return out;
    }

    std::uint32_t output(const std::string& name, const std::vector<std::uint32_t>& from, Shape shape) {
        const DType src = index_.tensors[from.front()].dtype;
        DType dst = src;
        if (options_.dtype) {
            if (!is_float(src)) throw Error(name, "cannot cast a " + std::string(torch_name(src)) + " tensor");
            dst = *options_.dtype;
        }
        mapping_.outputs.push_back({name, dst, std::move(shape)});
        return static_cast<std::uint32_t>(mapping_.outputs.size() - 1);
    }

    void copy(std::uint32_t src, std::uint64_t src_off, std::uint64_t src_pitch, std::uint32_t dst,
              std::uint64_t dst_off, std::uint64_t dst_pitch, std::uint64_t cols, std::uint64_t rows,
              bool verify = false) {
        if (rows && cols) mapping_.copies.push_back({src, src_off, src_pitch, dst, dst_off, dst_pitch, cols, rows, verify});
    }

    // Global rows [begin, begin+count) of a tensor split on dim 0 into equal TP shards -> dst rows from dst_row.
    void rows_dim0(const std::vector<std::uint32_t>& sh, std::uint64_t cols, std::uint64_t begin, std::uint64_t count,
                   std::uint32_t dst, std::uint64_t dst_row) {
        const std::uint64_t per_rank = index_.tensors[sh.front()].shape.front();
        while (count > 0) {
            const std::uint64_t r = begin / per_rank, local = begin % per_rank;
            const std::uint64_t n = std::min(count, per_rank - local);
            copy(sh[r], local * cols, cols, dst, dst_row * cols, cols, cols, n);
            begin += n;
            dst_row += n;
            count -= n;
        }
    }

    // Row-parallel weight [rows, cols/t] per rank -> columns [r*cols/t, (r+1)*cols/t) of [rows, cols].
    void cols_dim1(const std::vector<std::uint32_t>& sh, std::uint64_t rows, std::uint64_t cols, std::uint32_t dst) {
        const std::uint64_t per_rank = cols / sh.size();
        for (std::size_t r = 0; r < sh.size(); ++r) copy(sh[r], 0, per_rank, dst, r * per_rank, cols, per_rank, rows);
    }

    // One copy from TP rank 0; every other rank's replica is read and compared.
    void replicated(Role role, std::int64_t layer, const Shape& shape, const std::string& hf) {
        auto sh = shards(role, layer, shape, hf);
        const auto dst = output(hf, sh, shape);
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        for (std::size_t r = 0; r < sh.size(); ++r) copy(sh[r], 0, n, dst, 0, n, n, 1, r > 0);
    }

    void map_layer(std::int64_t layer) {
        const std::uint64_t H = s_.hidden_size, t = static_cast<std::uint64_t>(s_.tp), hd = s_.head_dim;
        const std::uint64_t ng = s_.num_query_groups, G = s_.heads_per_group(), F = s_.ffn_hidden_size;
        const std::uint64_t B = (G + 2) * hd;  // rows of one query group block in the fused QKV
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        const std::string attn = p + "self_attn.", mlp = p + "mlp.";

        if (s_.qkv_rows() % t || (s_.num_heads * hd) % t || F % t || s_.padded_vocab_size % t)
            throw Error("args", "a split dimension is not divisible by tensor_model_parallel_size " +
                                    std::to_string(t));

        // Fused QKV: ng group blocks of [G q heads; k head; v head], split per group into q, k and v.
        for (const bool bias : {false, true}) {
            if (bias && !s_.linear_bias) break;
            const std::uint64_t cols = bias ? 1 : H;
            const Shape shard_shape = bias ? Shape{s_.qkv_rows() / t} : Shape{s_.qkv_rows() / t, H};
            const std::string suffix = bias ? ".bias" : ".weight";
            auto sh = shards(bias ? Role::QkvBias : Role::Qkv, layer, shard_shape, attn + "q_proj" + suffix);
            auto shape = [&](std::uint64_t rows) { return bias ? Shape{rows} : Shape{rows, H}; };
            const auto q = output(attn + "q_proj" + suffix, sh, shape(s_.num_heads * hd));
            const auto k = output(attn + "k_proj" + suffix, sh, shape(ng * hd));
            const auto v = output(attn + "v_proj" + suffix, sh, shape(ng * hd));
            for (std::uint64_t g = 0; g < ng; ++g) {
                rows_dim0(sh, cols, g * B, G * hd, q, g * G * hd);
                rows_dim0(sh, cols, g * B + G * hd, hd, k, g * hd);
                rows_dim0(sh, cols, g * B + (G + 1) * hd, hd, v, g * hd);
            }
        }
        auto proj = shards(Role::Proj, layer, {H, s_.num_heads * hd / t}, attn + "o_proj.weight");
        cols_dim1(proj, H, s_.num_heads * hd, output(attn + "o_proj.weight", proj, {H, s_.num_heads * hd}));
        if (s_.linear_bias) replicated(Role::ProjBias, layer, {H}, attn + "o_proj.bias");
        if (s_.qk_layernorm) {
            replicated(Role::QNorm, layer, {hd}, attn + "q_layernorm.weight");
            replicated(Role::KNorm, layer, {hd}, attn + "k_layernorm.weight");
        }

        // Legacy SwiGLU fc1: every TP rank holds [gate_r; up_r], F/t rows each.
        const std::uint64_t fr = F / t;
        for (const bool bias : {false, true}) {
            if (bias && !s_.linear_bias) break;
            const std::uint64_t cols = bias ? 1 : H;
            const std::string suffix = bias ? ".bias" : ".weight";
            auto sh = shards(bias ? Role::Fc1Bias : Role::Fc1, layer, bias ? Shape{2 * fr} : Shape{2 * fr, H},
                             mlp + "gate_proj" + suffix);
            const Shape out_shape = bias ? Shape{F} : Shape{F, H};
            const auto gate = output(mlp + "gate_proj" + suffix, sh, out_shape);
            const auto up = output(mlp + "up_proj" + suffix, sh, out_shape);
            for (std::uint64_t r = 0; r < t; ++r) {
                copy(sh[r], 0, cols, gate, r * fr * cols, cols, cols, fr);
                copy(sh[r], fr * cols, cols, up, r * fr * cols, cols, cols, fr);
            }
        }
        auto fc2 = shards(Role::Fc2, layer, {H, F / t}, mlp + "down_proj.weight");
        cols_dim1(fc2, H, F, output(mlp + "down_proj.weight", fc2, {H, F}));
        if (s_.linear_bias) replicated(Role::Fc2Bias, layer, {H}, mlp + "down_proj.bias");

        replicated(Role::InputNorm, layer, {H}, p + "input_layernorm.weight");
        replicated(Role::PreMlpNorm, layer, {H}, p + "post_attention_layernorm.weight");
    }

    // The order of the HF model's state_dict() (module registration order, weight before bias): it decides
    // which tensors share a shard file, as in save_pretrained.
    void into_state_dict_order() {
        static const std::vector<std::string_view> modules{
            "self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "self_attn.o_proj.",
            "self_attn.q_layernorm.", "self_attn.k_layernorm.", "mlp.gate_proj.", "mlp.up_proj.",
            "mlp.down_proj.", "input_layernorm.", "post_attention_layernorm."};
        auto rank = [&](const std::string& name) {
            constexpr std::string_view layers = "model.layers.";
            if (name == "model.embed_tokens.weight") return std::tuple<int, std::uint64_t, std::size_t, bool>{0, 0, 0, 0};
            if (name == "model.norm.weight") return std::tuple<int, std::uint64_t, std::size_t, bool>{2, 0, 0, 0};
            if (!name.starts_with(layers)) return std::tuple<int, std::uint64_t, std::size_t, bool>{3, 0, 0, 0};
            const auto rest = std::string_view(name).substr(layers.size());
            const auto dot = rest.find('.');
            std::uint64_t layer = 0;
            std::from_chars(rest.data(), rest.data() + dot, layer);
            const auto param = rest.substr(dot + 1);
            std::size_t m = 0;
            while (m < modules.size() && !param.starts_with(modules[m])) ++m;
            return std::tuple<int, std::uint64_t, std::size_t, bool>{1, layer, m, param.ends_with(".bias")};
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
    const SourceIndex& index_;
    const MappingOptions& options_;
    std::vector<bool> used_;
    std::map<Key, std::uint32_t> lookup_;
    Mapping mapping_;
};

}  // namespace

Mapping map_tensors(const ModelSpec& spec, const plan::SourceIndex& index, const MappingOptions& options) {
    return Builder(spec, index, options).build();
}

}  // namespace m2h::model
