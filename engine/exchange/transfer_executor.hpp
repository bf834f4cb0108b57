#pragma once
// Runs a TransferPlan: per round, each rank reads its pieces straight into its send buffer (casting on the
// way; pieces it writes itself go straight into their window), one MPI_Alltoallv moves them to the writers,
// each writer assembles its windows, and every rank hands its assembled windows to the output sink
// (io/output_sink.hpp: positioned writes, or parallel HDF5). A sink that makes no MPI calls writes round r on
// a second thread while round r + 1 is read and exchanged (two window buffers), and a third thread streams the
// ranges the rank reads entirely itself (plan/streamed_ranges.hpp) from source to sink through small buffers,
// ahead of the rounds; the windows are written around them. Failures on any rank stop every rank at the next
// round boundary. Both reading threads' source reads are paced to one per-rank rate when one is set.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "exchange/mpi_comm.hpp"
#include "io/output_sink.hpp"
#include "tensors/source_index.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::exchange {

struct TransferStats {
    std::uint64_t bytes_read = 0;      // by this rank, from source files
    std::uint64_t bytes_streamed = 0;  // of those, read by the writer thread into a small buffer (streamed ranges)
    std::uint64_t bytes_sent = 0;      // output bytes this rank sent to other ranks
    std::uint64_t bytes_written = 0;   // by this rank, into output files
};

// Names the tensor copy behind a piece's tag, for error messages.
using DescribeCopy = std::function<std::string(std::uint32_t tag)>;
// Called on every rank after each round with the output bytes completed so far.
using RoundDone = std::function<void(std::size_t round, std::uint64_t bytes_done)>;

struct ReadLimits {
    std::uint64_t cache_bytes = 0;    // bounds the decompressed zstd items a rank keeps
    std::uint64_t max_read_rate = 0;  // per rank, bytes per second of source reads (read_pacer.hpp); 0: no limit
};

TransferStats execute_transfers(const Comm& comm, const plan::TransferPlan& plan,
                                const std::vector<tensors::SourceFile>& sources, io::OutputSink& sink,
                                const DescribeCopy& describe, const RoundDone& round_done, const ReadLimits& limits);

}  // namespace m2h::exchange
