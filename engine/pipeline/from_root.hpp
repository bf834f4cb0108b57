#pragma once
// JSON values shared between ranks: one only rank 0 computes (listing folders, reading small files), agreed on
// by every rank, and one from each rank, gathered on all.
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "exchange/mpi_comm.hpp"

namespace m2h::pipeline {

// Runs `produce` on rank 0 only, under exchange::collective (its error stops every rank), and hands its result
// to every rank.
nlohmann::json from_root(const exchange::Comm& comm, const std::function<nlohmann::json()>& produce);

// Every rank's `mine`, in rank order, on every rank.
std::vector<nlohmann::json> all_gather_json(const exchange::Comm& comm, const nlohmann::json& mine);

}  // namespace m2h::pipeline
