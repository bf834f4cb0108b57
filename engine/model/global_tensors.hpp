#pragma once
// Both checkpoint formats, seen the same way: each Megatron tensor of one layer (key with the GLOBAL layer
// index, TransformerEngine names) is a 2-D global tensor assembled from chunks of stored tensors.
//  - legacy `torch`: TP shards are chunks on their split axis; a SwiGLU fc1 shard [gate_r; up_r] is two chunks
//    of the global [gate; up]; replicated tensors are full chunks, all but TP rank 0's marked as replicas;
//    layers are numbered by the PP/VPP offsets of their file.
//  - `torch_dist`: DCP chunks already carry their global offsets; a stacked key's leading layer axis is split
//    into per-layer tensors.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/model_spec.hpp"
#include "tensors/source_index.hpp"

namespace m2h::model {

struct Chunk {
    std::uint32_t source = 0;          // SourceIndex tensor
    std::uint64_t source_offset = 0;   // elements into the stored tensor where this chunk starts
    std::uint64_t row0 = 0, col0 = 0;  // position in the global tensor
    std::uint64_t rows = 0, cols = 0;  // row-major, pitch `cols` in the stored tensor
    bool replica = false;              // a copy of bytes another chunk provides: compared, not written
};

struct GlobalTensor {
    std::vector<std::uint64_t> shape;  // 1-D or 2-D, as the model defines it
    std::uint64_t rows = 0, cols = 0;  // 2-D view: a 1-D tensor of n elements is n rows of 1
    std::vector<Chunk> chunks;
};

struct GlobalTensors {
    std::map<std::string, GlobalTensor> tensors;  // "decoder.layers.3.mlp.linear_fc1.weight", ...
    std::vector<std::string> ignored;              // stored tensors deliberately not used, with the reason
};

// Throws m2h::Error naming the file and key for unknown tensors (never silently dropped), pipeline layouts that
// disagree with the args, and chunks that overlap, leave gaps, or fall outside their tensor.
GlobalTensors global_tensors(const ModelSpec& spec, const tensors::SourceIndex& index);

// For messages about a key the checkpoint lacks: the file that should have held it (DCP: `.metadata`; legacy:
// a rank file of the pipeline stage the key belongs to, else the iteration folder).
std::string expected_source(const ModelSpec& spec, const tensors::SourceIndex& index, const std::string& key);

// The pipeline stage of each source file, from the tensors it holds (none for a file without tensors).
std::vector<std::optional<int>> file_stages(const tensors::SourceIndex& index);

}  // namespace m2h::model
