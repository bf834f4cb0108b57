#pragma once
// What the index stage hands the plan: every model tensor of the checkpoint, where its bytes are, and the
// parallel coordinates of the shard it came from. Plain data, serialisable, identical on every rank.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dtype.hpp"

namespace m2h::tensors {

struct SourceTensor {
    std::string key;                    // as saved, e.g. "decoder.layers.1.mlp.linear_fc1.weight"
    DType dtype = DType::F32;
    std::vector<std::uint64_t> shape;
    std::uint32_t file = 0;             // index into SourceIndex::files
    std::uint64_t offset = 0;           // absolute byte offset of element 0; elements are row-major contiguous
    int tp_rank = 0;
    int pp_rank = 0;
    int ep_rank = 0;                    // legacy: the expert-parallel rank of the file (mp_rank_TT_PPP_EEE)
    int vpp_chunk = -1;                 // -1: the state dict had a single `model` entry
    // torch_dist only: where this stored block sits in the saved global tensor (DCP chunk offsets and size).
    std::vector<std::uint64_t> global_offset;
    std::vector<std::uint64_t> global_shape;
    std::uint64_t numel() const;
    std::uint64_t nbytes() const;
};

// What readers read from: a file, or one zstd-compressed DCP item of a file that they decompress first
// (offsets of its tensors are then relative to the decompressed bytes).
struct SourceFile {
    std::string path;
    bool zstd = false;
    std::uint64_t item_offset = 0;  // the compressed item, when zstd
    std::uint64_t item_length = 0;
    std::string name() const;       // for messages: the path, plus the item for a compressed one
};

struct SourceIndex {
    std::string format;                 // "torch" or "torch_dist"
    std::vector<SourceFile> files;
    std::vector<SourceTensor> tensors;
    nlohmann::json args;                // the saved Megatron args (argparse.Namespace as a JSON object)
    std::int64_t iteration = 0;
    std::vector<std::string> skipped;   // keys deliberately not converted (extra state, tied copies), for the log
};

nlohmann::json to_json(const SourceTensor& tensor);
SourceTensor source_tensor_from_json(const nlohmann::json& j);
nlohmann::json to_json(const SourceIndex& index);
SourceIndex source_index_from_json(const nlohmann::json& j);

}  // namespace m2h::tensors
