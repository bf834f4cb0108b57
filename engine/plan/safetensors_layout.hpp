#pragma once
// Pure: where every Hugging Face tensor goes. Splits tensors into shard files with huggingface_hub's
// algorithm, orders each file as the reference safetensors writer does (dtype descending, then name
// byte-wise ascending), and renders each file's header and the index. No I/O.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.hpp"
#include "tensors/output_tensor.hpp"

namespace m2h::plan {

struct OutputFile {
    std::string name;                  // "model.safetensors" or "model-00001-of-00003.safetensors"
    std::string header;                // the 8-byte little-endian length followed by the padded JSON
    std::uint64_t size = 0;            // header.size() + data bytes: the exact file size
    std::vector<std::size_t> tensors;  // indices into the input tensor list, in data order
};

struct TensorPlacement {
    std::size_t file;                  // index into OutputLayout::files
    std::uint64_t offset;              // absolute byte offset of the tensor's data in that file
};

struct OutputLayout {
    std::vector<OutputFile> files;
    std::vector<TensorPlacement> placement;  // one per input tensor
    std::optional<std::string> index_json;   // model.safetensors.index.json, only when sharded
    std::uint64_t total_size = 0;            // sum of tensor bytes
};

// `tensors` in state-dict order (that order decides the shards); names must be unique.
OutputLayout layout_safetensors(const std::vector<tensors::OutputTensor>& tensors, std::uint64_t max_shard_size);

}  // namespace m2h::plan
