#pragma once
// PyTorch Distributed Checkpoint (Megatron `--ckpt-format torch_dist`) metadata: the `.metadata` pickle of an
// iteration directory, interpreted into tensors (dtype, global shape, chunks and where each chunk's bytes lie)
// and byte items (ShardedObjects: extra state, RNG, common state). docs/formats.md §5.2-5.7.
//
// Everything is validated before anyone reads data: each chunk has exactly one storage entry, the chunks of a
// tensor lie inside it, do not overlap and cover it exactly, and every data file name is a plain relative name.
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.hpp"
#include "pickle/value.hpp"

namespace m2h::formats {

// Where one item's bytes are: [offset, offset + length) of `relative_path` inside the iteration directory.
struct DcpStorage {
    std::string relative_path;  // plain relative name: no "..", "." or empty component, no leading '/', no '\'
    std::uint64_t offset = 0, length = 0;
    std::vector<std::string> transforms;  // stream transforms ("stream.zstd/1"), as stored; empty when none
};

// One saved block of a tensor: a row-major block of `sizes` placed at `offsets` (in elements) of the global
// tensor. Its bytes are a complete torch.save archive (prefix archive/) after undoing `storage.transforms`.
struct DcpChunk {
    std::vector<std::uint64_t> offsets, sizes;
    DcpStorage storage;
};

struct DcpTensor {
    std::string fqn;
    DType dtype;
    std::vector<std::uint64_t> size;  // global shape
    std::vector<DcpChunk> chunks;     // in .metadata order
};

// A BYTE_IO item (Megatron ShardedObject): its bytes are torch.save of a list.
struct DcpBytesItem {
    std::string fqn;
    DcpStorage storage;
};

struct DcpMetadata {
    std::vector<DcpTensor> tensors;     // in state_dict_metadata order
    std::vector<DcpBytesItem> bytes;    // in state_dict_metadata order
};

// Interprets an unpickled .metadata root: Metadata (torch 2.0-2.9 class paths) or Megatron's MCoreMetadata.
// Extra fields (mcore_data, storage_meta, version, planner_data, a longer TensorProperties state) are ignored;
// a missing or malformed required field is an Error naming `source` and the fqn and field.
DcpMetadata parse_dcp_metadata(const pickle::Value& root, const std::string& source);

// Reads <iteration_dir>/.metadata (size-checked; persistent ids are refused) and parses it.
DcpMetadata read_dcp_metadata(const std::string& iteration_dir);

}  // namespace m2h::formats
