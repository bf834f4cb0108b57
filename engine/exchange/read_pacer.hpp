#pragma once
// --max-read-rate: a rank's source reads are paced so that, from the start of the transfers, they average at most
// the rate. A conversion beside a live training job on the same shared filesystem then leaves the bandwidth that
// training's checkpoint writes need. After each read the rank sleeps as long as it is ahead of the rate, in short
// slices, and stops sleeping as soon as a stop signal arrives (common/stop_signal.hpp), so SLURM's warning before
// the time limit is taken at the next agreement point, not after a long sleep.
#include <atomic>
#include <chrono>
#include <cstdint>

namespace m2h::exchange {

// How long a reader that has read `bytes_read` bytes in `elapsed` must wait to average at most `bytes_per_second`
// (0: no limit): zero when it is at or below the rate.
std::chrono::nanoseconds pacing_delay(std::uint64_t bytes_read, std::chrono::nanoseconds elapsed,
                                      std::uint64_t bytes_per_second);

// One per rank, shared by the rank's reading threads (each thread's reads count against the same rate).
class ReadPacer {
public:
    explicit ReadPacer(std::uint64_t bytes_per_second);  // 0: no limit; the clock starts here
    // Called after each read of `bytes` from a source file: sleeps until the rank is back at the rate.
    void after_read(std::uint64_t bytes);

private:
    std::uint64_t rate_;
    std::chrono::steady_clock::time_point start_;
    std::atomic<std::uint64_t> bytes_{0};
};

}  // namespace m2h::exchange
