#pragma once
// Pure: the whole conversion as data. Source index + tensor mapping + output layout -> byte-level transfers.
#include <cstdint>
#include <vector>

#include "model/tensor_mapping.hpp"
#include "plan/safetensors_layout.hpp"
#include "tensors/source_index.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::plan {

struct ConversionPlan {
    OutputLayout layout;
    TransferPlan transfers;
    std::uint64_t source_bytes = 0;  // bytes the readers read (model tensors, replicas compared across TP included)
    std::uint64_t model_bytes = 0;   // the model's own bytes among them
};

// `cut_rows`, when given, holds one count per output tensor: windows cut that tensor only at multiples of
// that many rows (HDF5 chunks, plan/hdf5_layout.hpp) instead of at any row.
ConversionPlan make_conversion_plan(const tensors::SourceIndex& index, const model::Mapping& mapping,
                                    std::uint64_t max_shard_size, const PlanLimits& limits,
                                    const std::vector<std::uint64_t>& cut_rows = {});

}  // namespace m2h::plan
