#pragma once
// Megatron's `torch_dist` format: a PyTorch distributed checkpoint (.metadata + __R_K.distcp data files) with
// the args in common.pt (or, from Megatron core 0.19, in the `common_state` item).
#include <cstdint>
#include <string>
#include <vector>

#include "formats/dcp_metadata.hpp"
#include "tensors/source_index.hpp"

namespace m2h::formats {

// True for DCP keys that are never converted and never read: optimizer and RNG state, common state, extra state.
bool is_training_state_key(std::string_view fqn);

// The model chunks of a checkpoint, in a fixed order (by fqn, then offsets): the unit of parallel indexing.
std::vector<std::pair<const DcpTensor*, const DcpChunk*>> model_chunks(const DcpMetadata& metadata);

// Reads the embedded torch.save archive of one chunk (zip directory and data.pkl only) and returns where its
// elements are. The caller sets `file`, the data file's index in its list.
tensors::SourceTensor index_dcp_chunk(const std::string& iteration_dir, const DcpTensor& tensor, const DcpChunk& chunk);

// The saved Megatron args and iteration: common.pt when present (core <= 0.18), else the common_state item.
struct CommonState {
    nlohmann::json args;
    std::int64_t iteration = 0;
};
CommonState read_common_state(const std::string& iteration_dir, const DcpMetadata& metadata);

}  // namespace m2h::formats
