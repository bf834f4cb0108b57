#pragma once
// A value only rank 0 computes (listing folders, reading small files), agreed on by every rank.
#include <functional>

#include <nlohmann/json.hpp>

#include "exchange/mpi_comm.hpp"

namespace m2h::pipeline {

// Runs `produce` on rank 0 only, under exchange::collective (its error stops every rank), and hands its result
// to every rank.
nlohmann::json from_root(const exchange::Comm& comm, const std::function<nlohmann::json()>& produce);

}  // namespace m2h::pipeline
