#pragma once
// Pure: which elements of which Megatron shard become which elements of which Hugging Face tensor.
// Every mapping (TP concatenation on either axis, the per-group QKV split, gate/up halves, PP/VPP layer
// offsets, replicated tensors, vocabulary trimming) is a list of 2-D element block copies.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/model_spec.hpp"
#include "tensors/output_tensor.hpp"
#include "tensors/source_index.hpp"

namespace m2h::model {

// rows × cols elements from source tensor `src` (row pitch src_pitch) to output tensor `dst` (pitch dst_pitch).
// Offsets and pitches are in elements. A verify-only copy re-reads a replica and compares it instead of writing.
struct TensorCopy {
    std::uint32_t src = 0;
    std::uint64_t src_offset = 0;
    std::uint64_t src_pitch = 0;
    std::uint32_t dst = 0;
    std::uint64_t dst_offset = 0;
    std::uint64_t dst_pitch = 0;
    std::uint64_t cols = 0;
    std::uint64_t rows = 0;
    bool verify_only = false;
};

struct MappingOptions {
    std::optional<DType> dtype;               // nullopt: keep each tensor's source dtype
    std::optional<std::uint64_t> vocab_size;  // trim embedding/lm_head rows
};

struct Mapping {
    std::vector<tensors::OutputTensor> outputs;  // state-dict order of the HF model
    std::vector<TensorCopy> copies;
    std::vector<std::string> ignored;         // source keys deliberately not written, with the reason
    std::uint64_t vocab_size = 0;             // rows written for the embedding
};

// Throws m2h::Error naming the tensor for a missing shard, a shape that disagrees with the args, a source
// tensor that maps to nothing, or inconsistent pipeline layer counts.
Mapping map_tensors(const ModelSpec& spec, const tensors::SourceIndex& index, const MappingOptions& options);

}  // namespace m2h::model
