#include "model/global_tensors.hpp"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <tuple>
#include <set>

#include "common/error.hpp"
#include "model/family.hpp"
#include "model/megatron_keys.hpp"

namespace m2h::model {
namespace {

using tensors::SourceIndex;
using tensors::SourceTensor;

std::string shape_text(const std::vector<std::uint64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

std::string where(const SourceIndex& index, const SourceTensor& t) { return index.files.at(t.file).name() + ": " + t.key; }

Error unknown(const SourceIndex& index, const SourceTensor& t) {
    return Error(where(index, t), "unknown Megatron tensor: maps to no Hugging Face tensor (refusing to drop weights silently)");
}

// 2-D view of a shape: [n] -> n x 1.
std::pair<std::uint64_t, std::uint64_t> rows_cols(const std::vector<std::uint64_t>& shape, const std::string& what) {
    if (shape.size() == 1) return {shape[0], 1};
    if (shape.size() == 2) return {shape[0], shape[1]};
    throw Error(what, "expected a 1-D or 2-D tensor, found " + std::to_string(shape.size()) + " dimensions");
}

class Assembler {
public:
    Assembler(const ModelSpec& spec, const SourceIndex& index) : s_(spec), index_(index) {}

    GlobalTensors legacy() {
        const auto offsets = layer_offsets();
        if (s_.is_moe() && s_.moe.etp != s_.tp)
            throw Error(iteration_folder(), "expert_tensor_parallel_size " + std::to_string(s_.moe.etp) +
                                                " differs from tensor_model_parallel_size " + std::to_string(s_.tp) +
                                                ": legacy rank files of that layout are not supported (torch_dist is)");
        for (std::uint32_t i = 0; i < index_.tensors.size(); ++i) {
            const auto& t = index_.tensors[i];
            std::optional<Split> split;
            std::string key;
            bool expert = false;
            if (auto lk = split_layer_key(t.key); lk && lk->layer) {
                auto role = layer_role(s_, lk->suffix);
                if (role && (role->expert == ExpertIndex::None || role->expert == ExpertIndex::Local)) {
                    split = role->split;
                    expert = role->expert == ExpertIndex::Local;
                    key = role->key(offsets.at({std::max(t.vpp_chunk, 0), t.pp_rank}) + *lk->layer,
                                    expert ? global_expert(t, role->expert_index) : 0);
                }
            } else if (auto role = global_key(s_, t.key)) {
                split = role->second;
                key = role->first;
            }
            if (!split) throw unknown(index_, t);
            if (key == "output_layer.weight" && s_.tied_embeddings) {
                // Megatron keeps a synchronised copy of the embedding on the last stage when PP > 1.
                out_.ignored.push_back(where(index_, t) + " (tied to the embedding)");
                continue;
            }
            check_shard_shape(t, key, *split);
            // Every expert-parallel rank's file repeats the dense part of its stage: EP rank 0's copy is written.
            const bool ep_copy = !expert && t.ep_rank > 0;
            add_shard(i, key, *split, ep_copy);
        }
        finish();
        return std::move(out_);
    }

    GlobalTensors torch_dist() {
        for (std::uint32_t i = 0; i < index_.tensors.size(); ++i) {
            const auto& t = index_.tensors[i];
            if (t.global_offset.size() != t.shape.size() || t.global_shape.size() != t.shape.size())
                throw Error(where(index_, t), "chunk without global offsets");
            const auto lk = split_layer_key(t.key);
            if (!lk) {
                const auto role = global_key(s_, t.key);
                if (!role) throw unknown(index_, t);
                add_dcp(role->first, i, t, t.shape, t.global_shape, t.global_offset, 0);
                continue;
            }
            const auto role = layer_role(s_, lk->suffix);
            if (!role || role->expert == ExpertIndex::Local) throw unknown(index_, t);
            add_dcp_layers(i, t, *role, lk->layer);
        }
        finish();
        return std::move(out_);
    }

private:
    std::string iteration_folder() const {
        return std::filesystem::path(index_.files.front().path).parent_path().parent_path().string();
    }

    // A legacy file's local expert j of expert-parallel rank r is the global expert r * E/EP + j.
    std::uint64_t global_expert(const SourceTensor& t, std::uint64_t local) const {
        const auto per_rank = s_.moe.local_experts();
        if (local >= per_rank || t.ep_rank >= s_.moe.ep)
            throw Error(where(index_, t), "local expert " + std::to_string(local) + " of expert-parallel rank " +
                                              std::to_string(t.ep_rank) + " does not fit " + std::to_string(s_.moe.num_experts) +
                                              " experts over expert_model_parallel_size " + std::to_string(s_.moe.ep));
        return static_cast<std::uint64_t>(t.ep_rank) * per_rank + local;
    }

    // One legacy TP shard as chunks of its global tensor; `copy`: every chunk is a replica (compared, not written).
    void add_shard(std::uint32_t i, const std::string& key, Split split, bool copy) {
        const auto& t = index_.tensors[i];
        const auto [rows, cols] = rows_cols(t.shape, where(index_, t));
        const auto tp = static_cast<std::uint64_t>(t.tp_rank);
        auto& g = out_.tensors[key];
        switch (split) {
            case Split::Dim0:
                add(g, key, {i, 0, tp * rows, 0, rows, cols, copy});
                break;
            case Split::Dim1:
                add(g, key, {i, 0, 0, tp * cols, rows, cols, copy});
                break;
            case Split::Replicated:
                add(g, key, {i, 0, 0, 0, rows, cols, copy || tp > 0});
                break;
            case Split::Gated: {
                // Each rank holds [gate_r; up_r]: rows of the global [gate; up] at r*h and F + r*h.
                if (rows % 2) throw Error(where(index_, t), "SwiGLU fc1 shard has an odd number of rows");
                const std::uint64_t h = rows / 2, F = h * static_cast<std::uint64_t>(s_.tp);
                add(g, key, {i, 0, tp * h, 0, h, cols, copy});
                add(g, key, {i, h * cols, F + tp * h, 0, h, cols, copy});
                break;
            }
        }
    }

    // A torch_dist chunk of a layer tensor. Its leading axes are the layer (stacked keys, no layer in the name) and
    // the expert (routed experts): each (layer, expert) slice of the chunk is a contiguous block of one tensor.
    void add_dcp_layers(std::uint32_t i, const SourceTensor& t, const LayerRole& role, std::optional<std::int64_t> layer) {
        const bool expert_axis = role.expert == ExpertIndex::Axis;
        const std::size_t lead = (layer ? 0 : 1) + (expert_axis ? 1 : 0);
        if (t.shape.size() <= lead) throw Error(where(index_, t), "too few dimensions for a layer tensor");
        if (!layer && t.global_shape[0] != s_.num_layers)
            throw Error(where(index_, t), "stacked layer axis of " + std::to_string(t.global_shape[0]) +
                                              " but args.num_layers is " + std::to_string(s_.num_layers));
        if (expert_axis && t.global_shape[lead - 1] != s_.moe.num_experts)
            throw Error(where(index_, t), "expert axis of " + std::to_string(t.global_shape[lead - 1]) +
                                              " but args.num_experts is " + std::to_string(s_.moe.num_experts));
        const std::vector<std::uint64_t> inner(t.shape.begin() + static_cast<std::ptrdiff_t>(lead), t.shape.end());
        const std::vector<std::uint64_t> ginner(t.global_shape.begin() + static_cast<std::ptrdiff_t>(lead), t.global_shape.end());
        const std::vector<std::uint64_t> off(t.global_offset.begin() + static_cast<std::ptrdiff_t>(lead), t.global_offset.end());
        std::uint64_t per_slice = 1;
        for (auto d : inner) per_slice *= d;
        const std::uint64_t layers = layer ? 1 : t.shape[0], experts = expert_axis ? t.shape[lead - 1] : 1;
        for (std::uint64_t l = 0; l < layers; ++l)
            for (std::uint64_t e = 0; e < experts; ++e) {
                const auto global_layer = layer ? *layer : static_cast<std::int64_t>(t.global_offset[0] + l);
                const auto global_expert = expert_axis ? t.global_offset[lead - 1] + e : role.expert_index;
                add_dcp(role.key(global_layer, global_expert), i, t, inner, ginner, off, (l * experts + e) * per_slice);
            }
    }

    // A TP shard holds 1/t of its global tensor along the split axis.
    void check_shard_shape(const SourceTensor& t, const std::string& key, Split split) {
        auto shape = expected_shape(s_, key);
        const auto tp = static_cast<std::uint64_t>(s_.tp);
        const std::size_t axis = split == Split::Dim1 ? 1 : 0;
        if (split != Split::Replicated) {
            if (shape[axis] % tp)
                throw Error(where(index_, t), "dimension " + std::to_string(shape[axis]) +
                                                  " is not divisible by tensor_model_parallel_size " + std::to_string(tp));
            shape[axis] /= tp;
        }
        if (t.shape != shape)
            throw Error(where(index_, t), "shape " + shape_text(t.shape) + " but the args imply " + shape_text(shape));
    }

    // The global shape comes from the args: a missing shard then shows as a gap, not a smaller tensor.
    void add(GlobalTensor& g, const std::string& key, Chunk c) {
        if (g.chunks.empty()) {
            g.shape = expected_shape(s_, key);
            std::tie(g.rows, g.cols) = rows_cols(g.shape, key);
        }
        g.chunks.push_back(c);
    }

    void add_dcp(const std::string& key, std::uint32_t i, const SourceTensor& t, const std::vector<std::uint64_t>& shape,
                 const std::vector<std::uint64_t>& global_shape, const std::vector<std::uint64_t>& offset,
                 std::uint64_t source_offset) {
        if (global_shape != expected_shape(s_, key))
            throw Error(where(index_, t), "global shape " + shape_text(global_shape) + " but the args imply " +
                                              shape_text(expected_shape(s_, key)));
        const auto [rows, cols] = rows_cols(shape, where(index_, t));
        const auto [grows, gcols] = rows_cols(global_shape, where(index_, t));
        auto& g = out_.tensors[key];
        if (!g.chunks.empty() && (g.rows != grows || g.cols != gcols))
            throw Error(where(index_, t), "global shape disagrees with another chunk of " + key);
        g.shape = global_shape;
        g.rows = grows;
        g.cols = gcols;
        g.chunks.push_back({i, source_offset, offset[0], offset.size() > 1 ? offset[1] : 0, rows, cols, false});
    }

    // Layer offset of each (chunk, stage) from the layer counts in the order the model runs them; the even-split
    // formula must agree unless the args describe an uneven pipeline.
    std::map<std::pair<int, int>, std::int64_t> layer_offsets() {
        std::map<std::pair<int, int>, std::int64_t> count;
        for (const auto& t : index_.tensors) {
            if (t.vpp_chunk >= s_.vpp || (s_.vpp > 1 && t.vpp_chunk < 0))
                throw Error(where(index_, t), "model chunk " + std::to_string(t.vpp_chunk) +
                                                  " does not fit virtual_pipeline_model_parallel_size " + std::to_string(s_.vpp));
            if (auto lk = split_layer_key(t.key); lk && lk->layer) {
                auto& c = count[{std::max(t.vpp_chunk, 0), t.pp_rank}];
                c = std::max(c, *lk->layer + 1);
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
                                                           " from the files but " + std::to_string(expected) + " from the args");
                }
                auto it = count.find({c, st});
                running += it == count.end() ? 0 : it->second;
            }
        if (running != L)
            throw Error("pipeline layout", "the rank files hold " + std::to_string(running) +
                                               " transformer layers but args.num_layers is " + std::to_string(L));
        return offset;
    }

    // Chunks that are written (not replicas) must tile their tensor: inside it, no overlaps, no gaps.
    void finish() {
        for (auto& [key, g] : out_.tensors) {
            std::vector<const Chunk*> own;
            std::uint64_t area = 0;
            const DType dtype = chunk_dtype(g);
            for (const auto& c : g.chunks) {
                const auto& t = index_.tensors[c.source];
                if (c.row0 + c.rows > g.rows || c.col0 + c.cols > g.cols)
                    throw Error(where(index_, t), "chunk lies outside its tensor " + key);
                if (t.dtype != dtype)
                    throw Error(where(index_, t), "dtype " + std::string(torch_name(t.dtype)) + " disagrees with " +
                                                      std::string(torch_name(dtype)) + " of the other chunks of " + key);
                if (c.replica) continue;
                own.push_back(&c);
                area += c.rows * c.cols;
            }
            std::sort(own.begin(), own.end(), [](auto* a, auto* b) { return std::pair(a->row0, a->col0) < std::pair(b->row0, b->col0); });
            for (std::size_t a = 0; a < own.size(); ++a)
                for (std::size_t b = a + 1; b < own.size() && own[b]->row0 < own[a]->row0 + own[a]->rows; ++b)
                    if (own[b]->col0 < own[a]->col0 + own[a]->cols && own[a]->col0 < own[b]->col0 + own[b]->cols)
                        throw Error(where(index_, index_.tensors[own[b]->source]),
                                    "overlaps another chunk of " + key + " (duplicate tensor?)");
            if (area != g.rows * g.cols)
                throw Error(missing_shard_file(g), key + ": the stored chunks cover " + std::to_string(area) + " of " +
                                                       std::to_string(g.rows * g.cols) + " elements (a shard is missing)");
        }
    }

    // The dtype every chunk must have: the args' params dtype when any chunk has it (so the damaged shard is
    // the one blamed, even when it is the first), else that of the first chunk.
    DType chunk_dtype(const GlobalTensor& g) const {
        for (const auto& c : g.chunks)
            if (index_.tensors[c.source].dtype == s_.params_dtype) return s_.params_dtype;
        return index_.tensors[g.chunks.front().source].dtype;
    }

    // Where the missing part of a tensor should have come from: a rank file of a pipeline stage that holds
    // other chunks of it but gave none; else the first file that gave a chunk.
    std::string missing_shard_file(const GlobalTensor& g) const {
        const auto stages = file_stages(index_);
        std::set<int> stage_of_chunks;
        std::set<std::uint32_t> givers;
        for (const auto& c : g.chunks) {
            givers.insert(index_.tensors[c.source].file);
            stage_of_chunks.insert(index_.tensors[c.source].pp_rank);
        }
        for (std::uint32_t f = 0; f < index_.files.size(); ++f)
            if (!givers.count(f) && stages[f] && stage_of_chunks.count(*stages[f])) return index_.files[f].name();
        return index_.files.at(*givers.begin()).name();
    }

    const ModelSpec& s_;
    const SourceIndex& index_;
    GlobalTensors out_;
};

}  // namespace

std::vector<std::optional<int>> file_stages(const tensors::SourceIndex& index) {
    std::vector<std::optional<int>> stage(index.files.size());
    for (const auto& t : index.tensors)
        if (t.file < stage.size()) stage[t.file] = t.pp_rank;
    return stage;
}

std::string expected_source(const ModelSpec& s, const tensors::SourceIndex& index, const std::string& key) {
    if (index.files.empty()) return "checkpoint";
    const std::filesystem::path first(index.files.front().path);
    if (index.format == "torch_dist") return (first.parent_path() / ".metadata").string();
    // Legacy: the rank file (tensor-parallel rank 0) of the pipeline stage that holds the key.
    std::optional<int> stage;
    if (key == "embedding.word_embeddings.weight") stage = 0;
    else if (key == "output_layer.weight" || key == "decoder.final_layernorm.weight") stage = s.pp - 1;
    else if (auto lk = split_layer_key(key); lk && lk->layer && s.even_pipeline && s.num_layers % (s.pp * s.vpp) == 0)
        stage = static_cast<int>((static_cast<std::uint64_t>(*lk->layer) / (s.num_layers / (s.pp * s.vpp))) % s.pp);
    if (stage) {
        const auto stages = file_stages(index);
        for (std::uint32_t f = 0; f < index.files.size(); ++f)
            if (stages[f] == stage) return index.files[f].name();
    }
    return first.parent_path().parent_path().string();  // the iteration folder
}

GlobalTensors global_tensors(const ModelSpec& spec, const tensors::SourceIndex& index) {
    Assembler a(spec, index);
    return index.format == "torch_dist" ? a.torch_dist() : a.legacy();
}

}  // namespace m2h::model
