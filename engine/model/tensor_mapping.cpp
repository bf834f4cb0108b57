#include "model/tensor_mapping.hpp"

#include <algorithm>
#include <set>

#include "common/error.hpp"
#include "model/family.hpp"
#include "model/global_tensors.hpp"

namespace m2h::model {
namespace {

using Shape = std::vector<std::uint64_t>;

class Builder {
public:
    Builder(const ModelSpec& spec, const tensors::SourceIndex& index, const MappingOptions& options)
        : s_(spec), family_(family_of(spec.arch)), index_(index), options_(options) {}

    Mapping build() {
        global_ = global_tensors(s_, index_);
        mapping_.ignored = global_.ignored;
        const std::uint64_t vocab = options_.vocab_size.value_or(s_.padded_vocab_size);
        if (vocab > s_.padded_vocab_size)
            throw Error("--vocab-size", "cannot grow the vocabulary from " + std::to_string(s_.padded_vocab_size) +
                                            " to " + std::to_string(vocab) + " rows");
        mapping_.vocab_size = vocab;

        for (const auto& t : hf_tensors(family_, s_)) apply(t);
        for (const auto& [key, g] : global_.tensors)
            if (!consumed_.count(key))
                throw Error(index_.files[index_.tensors[g.chunks.front().source].file].name() + ": " +
                                index_.tensors[g.chunks.front().source].key,
                            "maps to no Hugging Face tensor of the " + std::string(family_.name) +
                                " family (refusing to drop weights silently)");
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

    // The HF tensor takes `count` rows of every `block`-row block from row `first` of it (for the q, k or v heads of
    // each query group), or one plain row range (blocks = 1).
    void block_rows(const GlobalTensor& g, std::uint64_t blocks, std::uint64_t block, std::uint64_t first,
                    std::uint64_t count, const std::string& name) {
        Shape shape = g.shape;
        shape[0] = blocks * count;
        const auto dst = output(name, g, shape);
        for (std::uint64_t b = 0; b < blocks; ++b) rows(g, b * block + first, count, dst, b * count);
    }

    void apply(const HfTensor& t) {
        const auto& g = need(t.megatron);
        const std::uint64_t hd = s_.head_dim, ng = s_.num_query_groups, G = s_.heads_per_group();
        const std::uint64_t F = g.rows / 2;
        switch (t.rule->transform) {
            case Transform::Whole: return block_rows(g, 1, g.rows, 0, g.rows, t.hf);
            case Transform::VocabRows: return block_rows(g, 1, g.rows, 0, mapping_.vocab_size, t.hf);
            // Fused QKV: ng group blocks of [G q heads; k head; v head].
            case Transform::Query: return block_rows(g, ng, (G + 2) * hd, 0, G * hd, t.hf);
            case Transform::Key: return block_rows(g, ng, (G + 2) * hd, G * hd, hd, t.hf);
            case Transform::Value: return block_rows(g, ng, (G + 2) * hd, (G + 1) * hd, hd, t.hf);
            // A SwiGLU fc1 (dense, expert or shared expert) as the global [gate; up] (both formats present it so).
            case Transform::Gate: return block_rows(g, 1, 2 * F, 0, F, t.hf);
            case Transform::Up: return block_rows(g, 1, 2 * F, F, F, t.hf);
        }
    }

    const ModelSpec& s_;
    const Family& family_;
    const tensors::SourceIndex& index_;
    const MappingOptions& options_;
    GlobalTensors global_;
    std::set<std::string> consumed_;
    Mapping mapping_;
};

}  // namespace

Mapping map_tensors(const ModelSpec& spec, const tensors::SourceIndex& index, const MappingOptions& options) {
    return Builder(spec, index, options).build();
}

}  // namespace m2h::model
