#pragma once
// Pure: the HDF5 side of the plan. Each Hugging Face tensor becomes one chunked dataset whose chunks are whole
// rows (dim 0); the transfer windows are cut only at chunk boundaries (make_conversion_plan's cut_rows), so
// every chunk is written by exactly one rank in exactly one round and a compressed chunk is never read back
// and rewritten. A window then holds, in order, row ranges of one or more tensors: its segments.
#include <cstdint>
#include <vector>

#include "plan/safetensors_layout.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::plan {

// Rows along dim 0 (1 for a 0-d tensor) and the bytes of one such row.
std::uint64_t tensor_rows(const tensors::OutputTensor& t);
std::uint64_t tensor_row_bytes(const tensors::OutputTensor& t);

// Rows per chunk for each tensor: as many whole rows as fit in `target_bytes`, at least one, at most the
// tensor's rows.
std::vector<std::uint64_t> hdf5_chunk_rows(const std::vector<tensors::OutputTensor>& tensors, std::uint64_t target_bytes);

struct WindowSegment {
    std::uint32_t tensor = 0;       // index into the tensor list
    std::uint64_t first_row = 0;
    std::uint64_t rows = 0;
    std::uint64_t window_offset = 0;  // where its bytes start in the window
};

// The segments of every window of `plan`, in window order, and per round the tensors that any of its windows
// touches, ascending (the order in which every rank makes its collective writes). Throws m2h::Error("plan",
// ...) when a window boundary falls inside a row.
struct Hdf5Writes {
    std::vector<std::vector<WindowSegment>> segments;    // per window
    std::vector<std::vector<std::uint32_t>> round_tensors;  // per round
};
Hdf5Writes hdf5_writes(const TransferPlan& plan, const OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors);

}  // namespace m2h::plan
