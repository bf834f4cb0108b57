#pragma once
// A simulated Megatron checkpoint for mapping tests: HF tensors with unique element values, split into Megatron
// shards the way Megatron lays them out (fused QKV per query group, [gate_r; up_r] per TP rank, row-parallel
// column blocks, PP/VPP local layer numbering, routed experts spread over EP ranks as local experts, the dense
// part repeated in every EP rank's file). Applying a mapping's copies must give the HF tensors back.
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "model/tensor_mapping.hpp"

namespace m2h::testing {

// How a legacy file names its local experts: SequentialMLP (local_experts.J.linear_fc1.weight) or TEGroupedMLP
// (linear_fc1.weightJ).
enum class ExpertNames { Sequential, TeGrouped };

struct Dims {
    std::uint64_t L = 4, H = 4, nq = 4, ng = 2, hd = 2, F = 6, V = 8;
    int tp = 2, pp = 1, vpp = 1;
    bool bias = true, qk = true, tied = true;
    bool qkv_bias_only = false;  // add_qkv_bias without add_bias_linear (with bias = true)
    // Mixture of experts (experts > 0): Mixtral's HF names without q/k norms or biases, else Qwen's.
    std::uint64_t experts = 0, moe_F = 2, shared_F = 0;
    int ep = 1;
    ExpertNames expert_names = ExpertNames::Sequential;
};

using Tensor = std::vector<float>;

struct World {
    std::map<std::string, Tensor> hf;
    std::map<std::string, std::vector<std::uint64_t>> hf_shape;
    tensors::SourceIndex index;
    Tensor memory;  // all source tensors back to back, "file" 0

    void add_source(const std::string& key, const Tensor& data, std::vector<std::uint64_t> shape, int tp, int pp, int chunk,
                    int ep = 0) {
        tensors::SourceTensor t;
        t.key = key;
        t.dtype = DType::F32;
        t.shape = std::move(shape);
        t.offset = memory.size() * 4;
        t.tp_rank = tp;
        t.pp_rank = pp;
        t.ep_rank = ep;
        t.vpp_chunk = chunk;
        memory.insert(memory.end(), data.begin(), data.end());
        index.tensors.push_back(t);
    }
};

inline Tensor rows_of(const Tensor& t, std::uint64_t cols, std::uint64_t begin, std::uint64_t count) {
    return Tensor(t.begin() + static_cast<std::ptrdiff_t>(begin * cols), t.begin() + static_cast<std::ptrdiff_t>((begin + count) * cols));
}

inline Tensor cols_of(const Tensor& t, std::uint64_t rows, std::uint64_t cols, std::uint64_t begin, std::uint64_t count) {
    Tensor out;
    for (std::uint64_t r = 0; r < rows; ++r)
        for (std::uint64_t c = begin; c < begin + count; ++c) out.push_back(t[r * cols + c]);
    return out;
}

// TP shard r of a SwiGLU fc1: [gate_r; up_r].
inline Tensor gated_shard(const Tensor& gate, const Tensor& up, std::uint64_t cols, std::uint64_t rows, int r) {
    auto fc1 = rows_of(gate, cols, static_cast<std::uint64_t>(r) * rows, rows);
    const auto u = rows_of(up, cols, static_cast<std::uint64_t>(r) * rows, rows);
    fc1.insert(fc1.end(), u.begin(), u.end());
    return fc1;
}

World make_world(const Dims& d);

std::map<std::string, Tensor> apply(const World& w, const model::Mapping& m);

}  // namespace m2h::testing
