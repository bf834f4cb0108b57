#pragma once
// One conversion, stage by stage: discover -> index -> plan -> move -> finish. Every stage that can fail on
// some ranks only runs under exchange::collective, so all ranks stop together and the error prints once.
#include <cstdint>
#include <optional>
#include <string>

#include "exchange/mpi_comm.hpp"
#include "pipeline/conversion_planning.hpp"
#include "pipeline/convert_options.hpp"
#include "pipeline/source_indexing.hpp"

namespace m2h::pipeline {

struct ConvertSummary {
    std::uint64_t tensors = 0;
    std::uint64_t bytes_written = 0;  // tensor data, all ranks
    std::uint64_t bytes_read = 0;     // tensor data read from the checkpoint, all ranks
    std::uint64_t process_bytes_read = 0;  // everything all ranks read (tensor data, archive headers, pickles)
    std::uint64_t model_bytes = 0;    // source model tensors' bytes that the plan needs
    std::string hdf5_group;           // hdf5: the group written
    std::uint64_t hdf5_stored_bytes = 0;  // hdf5: bytes the datasets occupy in the file (compressed)
    double seconds = 0;
    double prepare_seconds = 0;       // before the first byte moved: indexing (what was not done ahead), planning
    bool plan_reused = false;
};

// One iteration, start to end.
ConvertSummary convert(const exchange::Comm& comm, const ConvertOptions& options);

// One iteration of a run, from the ranks' index shares (made ahead, while the previous iteration was written).
// `previous` holds the run's last plan (or nothing): it is reused when this iteration has its layout, and is
// replaced by this iteration's plan.
ConvertSummary convert(const exchange::Comm& comm, const ConvertOptions& options, IndexShare share,
                       std::optional<PlannedConversion>& previous);

}  // namespace m2h::pipeline
