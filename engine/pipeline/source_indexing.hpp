#pragma once
// The discover and index stages in two halves, so that a run of many iterations can index the next one while it
// writes the current one: index_share() is what one rank does alone (find the iteration folder, index its share
// of the shards; no MPI, so it may run on a thread of its own), gather_index() puts the shares together into the
// same index on every rank (collective).
#include <cstdint>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "exchange/mpi_comm.hpp"
#include "tensors/source_index.hpp"

namespace m2h::pipeline {

struct IndexShare {
    std::string iteration_dir;
    std::string format;              // "torch" or "torch_dist"
    nlohmann::json listing;          // the shards this rank found; every rank must have found the same
    nlohmann::json parts;            // this rank's share of the per-shard (torch) or per-chunk (torch_dist) indexes
    tensors::SourceIndex skeleton;   // torch_dist: files, skipped keys, and on rank 0 the args and iteration
    std::uint64_t part_count = 0;    // how many parts all ranks index together
    std::exception_ptr error;        // an m2h::Error, rethrown by gather_index so that every rank stops together
};

struct IndexedCheckpoint {
    std::string iteration_dir;
    std::string format;
    tensors::SourceIndex index;
};

// Never throws: a failure is kept in IndexShare::error.
IndexShare index_share(const std::string& input, const std::string& iteration, int rank, int size) noexcept;

// Collective. Throws the first rank's error (PeerFailed on the others), or m2h::Error when the ranks saw
// different shards (the folder changed while it was being indexed).
IndexedCheckpoint gather_index(const exchange::Comm& comm, IndexShare share);

}  // namespace m2h::pipeline
