#pragma once
// Several iterations of a run in one engine run (--iteration N,M / A-B / all): MPI and the process start once,
// each iteration is converted as convert() converts one, into its own folder (or HDF5 group), complete or absent.
// A failing iteration prints its one line and the run goes on; a stop signal ends it.
#include <cstdint>
#include <vector>

#include "exchange/mpi_comm.hpp"
#include "formats/iteration_request.hpp"
#include "pipeline/convert.hpp"

namespace m2h::pipeline {

struct RunSummary {
    std::vector<std::int64_t> converted, failed;
};

// Throws m2h::Error for a request that selects nothing, or for a stop signal (with what it had converted logged).
RunSummary convert_iterations(const exchange::Comm& comm, const ConvertOptions& options,
                              const formats::IterationRequest& request);

// Rank 0's "done: ..." line of one conversion.
void log_done(const ConvertSummary& s, const std::string& output);

}  // namespace m2h::pipeline
