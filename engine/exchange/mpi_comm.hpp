#pragma once
// Thin RAII layer over the few MPI calls the engine makes. Counts are checked to fit an int before any call.
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <mpi.h>

#include "common/error.hpp"

namespace m2h::exchange {

class MpiSession {
public:
    MpiSession(int* argc, char*** argv);
    ~MpiSession();
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;
};

class Comm {
public:
    Comm();  // a duplicate of MPI_COMM_WORLD, freed on destruction
    ~Comm();
    Comm(const Comm&) = delete;
    Comm& operator=(const Comm&) = delete;

    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    MPI_Comm handle() const noexcept { return comm_; }  // for libraries that take a communicator (parallel HDF5)
    void barrier() const;
    void broadcast(std::vector<std::byte>& bytes, int root) const;  // resizes on non-roots
    // Everyone's bytes, in rank order.
    std::vector<std::vector<std::byte>> all_gather(std::span<const std::byte> mine) const;
    std::uint64_t sum(std::uint64_t x) const;
    std::uint64_t max(std::uint64_t x) const;
    int min(int x) const;
    double max(double x) const;
    // Counts and displacements are in bytes and already int-sized by the plan.
    void all_to_all(std::span<const std::byte> send, const std::vector<int>& send_counts,
                    const std::vector<int>& send_displs, std::span<std::byte> recv, const std::vector<int>& recv_counts,
                    const std::vector<int>& recv_displs) const;
    [[noreturn]] void abort(int code) const;

private:
    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
};

// Thrown on the ranks that did not fail when another rank reported an error: they exit quietly.
struct PeerFailed {};

// How long a rank that was asked to stop waits for the others to agree before it stops without them.
inline constexpr std::chrono::seconds kStopGrace{3};

// Thrown by a rank that stopped without its peers (see kStopGrace): MPI can no longer be finalized, so the
// process must end without it once this rank's own cleanup (its staging folder) is done.
struct PeersLost : Error {
    using Error::Error;
};

// Runs `step` on every rank and agrees on the outcome: if any rank threw m2h::Error, or was asked to stop by a
// signal (common/stop_signal.hpp), the lowest such rank rethrows its error (so the message is printed once) and
// every other rank throws PeerFailed.
void collective(const Comm& comm, const std::function<void()>& step);

}  // namespace m2h::exchange
