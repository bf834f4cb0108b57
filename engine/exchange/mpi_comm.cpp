#include "exchange/mpi_comm.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <exception>
#include <optional>
#include <thread>

#include "common/error.hpp"
#include "common/stop_signal.hpp"

namespace m2h::exchange {
namespace {

void check(int code, const char* what) {
    if (code != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(code, text, &len);
        throw Error("MPI", std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(len)));
    }
}

int to_int(std::uint64_t n, const char* what) {
    if (n > static_cast<std::uint64_t>(INT_MAX)) throw Error("MPI", std::string(what) + " larger than INT_MAX bytes");
    return static_cast<int>(n);
}

// Waits for a non-blocking operation without spinning. Blocking MPI calls poll at full speed, and a rank
// that arrives first would take a core from the ranks it waits for, and from their writer threads, whenever
// ranks share cores. Polling with short sleeps (growing to 200 us, small next to a round) leaves them the CPU.
//
// A stop signal reaches every task of a job at once, so the others come to this agreement within moments, unless
// they cannot: their host died or its link is cut, and Open MPI over TCP does not notice. After kStopGrace this
// rank gives up on them (PeersLost), so that it still removes what it owns before SLURM kills it.
void wait_politely(MPI_Request& request, const char* what) {
    using Clock = std::chrono::steady_clock;
    auto pause = std::chrono::microseconds(1);
    std::optional<Clock::time_point> stop_seen;
    for (;;) {
        int done = 0;
        const int code = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (code != MPI_SUCCESS) {
            if (request != MPI_REQUEST_NULL) MPI_Request_free(&request);
            check(code, what);
        }
        if (done) return;
        if (const int s = stop_signal()) {
            if (!stop_seen) stop_seen = Clock::now();
            if (Clock::now() - *stop_seen > kStopGrace)
                throw PeersLost(signal_name(s), "stopped before the conversion finished, without the ranks that did not "
                                                "answer within " + std::to_string(kStopGrace.count()) +
                                                " s of it (a host down or cut off?)");
        }
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(200));
    }
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
}

MpiSession::~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

Comm::Comm() {
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    // Errors come back as codes and become exceptions, so collective() can report them once.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
}

Comm::~Comm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void Comm::barrier() const { check(MPI_Barrier(comm_), "MPI_Barrier"); }

void Comm::broadcast(std::vector<std::byte>& bytes, int root) const {
    std::uint64_t n = bytes.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm_), "MPI_Bcast");
    bytes.resize(n);
    check(MPI_Bcast(bytes.data(), to_int(n, "broadcast"), MPI_BYTE, root, comm_), "MPI_Bcast");
}

std::vector<std::vector<std::byte>> Comm::all_gather(std::span<const std::byte> mine) const {
    const int n = to_int(mine.size(), "all_gather");
    std::vector<int> counts(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_), "MPI_Allgather");
    std::uint64_t total = 0;
    for (int r = 0; r < size_; ++r) {
        displs[static_cast<std::size_t>(r)] = to_int(total, "all_gather");
        total += static_cast<std::uint64_t>(counts[static_cast<std::size_t>(r)]);
    }
    std::vector<std::byte> all(total);
    check(MPI_Allgatherv(mine.data(), n, MPI_BYTE, all.data(), counts.data(), displs.data(), MPI_BYTE, comm_),
          "MPI_Allgatherv");
    std::vector<std::vector<std::byte>> out;
    for (int r = 0; r < size_; ++r) {
        const auto begin = all.begin() + displs[static_cast<std::size_t>(r)];
        out.emplace_back(begin, begin + counts[static_cast<std::size_t>(r)]);
    }
    return out;
}

std::uint64_t Comm::sum(std::uint64_t x) const {
    std::uint64_t out = 0;
    check(MPI_Allreduce(&x, &out, 1, MPI_UINT64_T, MPI_SUM, comm_), "MPI_Allreduce");
    return out;
}

std::uint64_t Comm::max(std::uint64_t x) const {
    std::uint64_t out = 0;
    check(MPI_Allreduce(&x, &out, 1, MPI_UINT64_T, MPI_MAX, comm_), "MPI_Allreduce");
    return out;
}

int Comm::min(int x) const {
    int out = 0;
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Iallreduce(&x, &out, 1, MPI_INT, MPI_MIN, comm_, &request), "MPI_Iallreduce");
    wait_politely(request, "MPI_Iallreduce");
    return out;
}

double Comm::max(double x) const {
    double out = 0;
    check(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_MAX, comm_), "MPI_Allreduce");
    return out;
}

void Comm::all_to_all(std::span<const std::byte> send, const std::vector<int>& send_counts,
                      const std::vector<int>& send_displs, std::span<std::byte> recv,
                      const std::vector<int>& recv_counts, const std::vector<int>& recv_displs) const {
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Ialltoallv(send.data(), send_counts.data(), send_displs.data(), MPI_BYTE, recv.data(),
                         recv_counts.data(), recv_displs.data(), MPI_BYTE, comm_, &request),
          "MPI_Ialltoallv");
    wait_politely(request, "MPI_Ialltoallv");
}

void Comm::abort(int code) const { MPI_Abort(comm_, code); std::terminate(); }

void collective(const Comm& comm, const std::function<void()>& step) {
    std::exception_ptr failure;
    try {
        step();
        if (const int s = stop_signal())
            throw Error(signal_name(s), "stopped before the conversion finished; its partial output is removed");
    } catch (const Error&) {
        failure = std::current_exception();
    }
    const int first = comm.min(failure ? comm.rank() : INT_MAX);
    if (first == INT_MAX) return;
    if (first == comm.rank()) std::rethrow_exception(failure);
    throw PeerFailed{};
}

}  // namespace m2h::exchange
