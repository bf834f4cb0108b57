#pragma once
// The plan stage: from an index to the model, its tensor mapping and the byte-level plan (pure, the same on every
// rank), or the previous iteration's plan when this iteration has its layout (plan/plan_reuse.hpp).
#include <cstdint>
#include <optional>
#include <vector>

#include "exchange/mpi_comm.hpp"
#include "model/model_spec.hpp"
#include "model/tensor_mapping.hpp"
#include "pipeline/convert_options.hpp"
#include "plan/conversion_plan.hpp"
#include "tensors/source_index.hpp"

namespace m2h::pipeline {

struct PlannedConversion {
    tensors::SourceIndex index;  // the iteration it serves now
    model::ModelSpec spec;
    model::Mapping mapping;
    plan::ConversionPlan conversion;
    std::vector<std::uint64_t> chunk_rows;  // hdf5: rows per chunk of each output tensor
    bool reused = false;                    // relocated from an earlier iteration's plan
};

// Collective. Leaves the plan for `index` in `previous` (reused or made) and returns it; on a failure
// `previous` is emptied on every rank, so that no two ranks go on with different plans.
const PlannedConversion& plan_conversion(const exchange::Comm& comm, const ConvertOptions& options,
                                         tensors::SourceIndex index, std::optional<PlannedConversion>& previous);

}  // namespace m2h::pipeline
