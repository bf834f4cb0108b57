#pragma once
// Pure: the iterations of a run usually share one layout (the same shards holding the same tensors), so the plan
// made for one serves the next. Only where a tensor's bytes start in its file may differ (a torch file's pickle
// grows with the numbers in its args), and the pieces that read it move with it.
#include "model/tensor_mapping.hpp"
#include "plan/transfer_plan.hpp"
#include "tensors/source_index.hpp"

namespace m2h::plan {

// The same files (count, compression) holding the same tensors (key, dtype, shape, shard coordinates) in the
// same order; offsets may differ.
bool same_layout(const tensors::SourceIndex& planned, const tensors::SourceIndex& next);

// `transfers`, made from `planned` and `mapping`, for `next` (same_layout(planned, next) must hold): every
// piece's source offset moves by as much as its tensor's offset did.
TransferPlan relocate(TransferPlan transfers, const model::Mapping& mapping, const tensors::SourceIndex& planned,
                      const tensors::SourceIndex& next);

}  // namespace m2h::plan
