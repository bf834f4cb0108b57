#include "plan/plan_reuse.hpp"

#include <algorithm>

namespace m2h::plan {

namespace {

bool same_place(const tensors::SourceTensor& a, const tensors::SourceTensor& b) {
    return a.key == b.key && a.dtype == b.dtype && a.shape == b.shape && a.file == b.file && a.tp_rank == b.tp_rank &&
           a.pp_rank == b.pp_rank && a.ep_rank == b.ep_rank && a.vpp_chunk == b.vpp_chunk &&
           a.global_offset == b.global_offset && a.global_shape == b.global_shape;
}

}  // namespace

bool same_layout(const tensors::SourceIndex& planned, const tensors::SourceIndex& next) {
    return planned.format == next.format && planned.files.size() == next.files.size() &&
           std::equal(planned.files.begin(), planned.files.end(), next.files.begin(),
                      [](const auto& a, const auto& b) { return a.zstd == b.zstd; }) &&
           std::equal(planned.tensors.begin(), planned.tensors.end(), next.tensors.begin(), next.tensors.end(), same_place);
}

TransferPlan relocate(TransferPlan transfers, const model::Mapping& mapping, const tensors::SourceIndex& planned,
                      const tensors::SourceIndex& next) {
    for (auto& piece : transfers.pieces) {
        const auto src = mapping.copies.at(piece.tag).src;
        // Unsigned wrap-around makes this right whichever way the tensor moved.
        piece.src_offset += next.tensors[src].offset - planned.tensors[src].offset;
    }
    return transfers;
}

}  // namespace m2h::plan
