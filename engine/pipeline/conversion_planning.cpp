#include "pipeline/conversion_planning.hpp"

#include <algorithm>

#include "common/fault_injection.hpp"
#include "plan/hdf5_layout.hpp"
#include "plan/plan_reuse.hpp"

namespace m2h::pipeline {

namespace {

// HDF5 chunks hold at most this many bytes (and never more than a transfer window).
constexpr std::uint64_t kHdf5ChunkBytes = 1ull << 20;

PlannedConversion make_plan(const exchange::Comm& comm, const ConvertOptions& options, tensors::SourceIndex index,
                            model::ModelSpec spec) {
    PlannedConversion p;
    p.mapping = model::map_tensors(spec, index, {options.dtype, options.vocab_size});
    plan::PlanLimits limits;
    limits.ranks = comm.size();
    // A round holds a send buffer, a receive buffer and the windows being assembled, while the previous
    // round's windows are being written.
    limits.round_bytes = std::clamp<std::uint64_t>(options.memory_budget / 4, 1, (1ull << 31) - 1);
    limits.window_bytes = std::min<std::uint64_t>(limits.round_bytes, 64ull << 20);
    limits.readers = options.readers;
    if (options.format == "hdf5") {
        // One layout file holds every dataset's bytes; windows are cut at chunk boundaries.
        p.chunk_rows = plan::hdf5_chunk_rows(p.mapping.outputs, std::min(kHdf5ChunkBytes, limits.window_bytes));
        p.conversion = plan::make_conversion_plan(index, p.mapping, ~std::uint64_t{0}, limits, p.chunk_rows);
    } else {
        p.conversion = plan::make_conversion_plan(index, p.mapping, options.max_shard_size, limits);
    }
    p.index = std::move(index);
    p.spec = std::move(spec);
    return p;
}

}  // namespace

const PlannedConversion& plan_conversion(const exchange::Comm& comm, const ConvertOptions& options,
                                         tensors::SourceIndex index, std::optional<PlannedConversion>& previous) {
    try {
        exchange::collective(comm, [&] {
            fault_point(comm.rank(), "plan");
            // The spec is made anew each time: it checks this iteration's args.
            auto spec = model::model_spec_from_args(index.args, {options.arch, options.num_key_value_heads},
                                                    index.files.front().name());
            if (previous && previous->spec == spec && plan::same_layout(previous->index, index)) {
                previous->conversion.transfers =
                    plan::relocate(std::move(previous->conversion.transfers), previous->mapping, previous->index, index);
                previous->index = std::move(index);
                previous->reused = true;
                return;
            }
            previous = make_plan(comm, options, std::move(index), std::move(spec));
        });
    } catch (...) {
        previous.reset();
        throw;
    }
    return *previous;
}

}  // namespace m2h::pipeline
