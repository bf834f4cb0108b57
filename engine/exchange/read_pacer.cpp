#include "exchange/read_pacer.hpp"

#include <algorithm>
#include <thread>

#include "common/stop_signal.hpp"

namespace m2h::exchange {
namespace {

using std::chrono::nanoseconds;

// A stop signal ends a sleep within this long.
constexpr nanoseconds kSleepSlice = std::chrono::milliseconds(100);

// Sleeps for `d`, or until a stop signal has arrived.
void sleep_unless_stopped(nanoseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (stop_signal() == 0) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= until) return;
        std::this_thread::sleep_for(std::min<nanoseconds>(until - now, kSleepSlice));
    }
}

}  // namespace

nanoseconds pacing_delay(std::uint64_t bytes_read, nanoseconds elapsed, std::uint64_t bytes_per_second) {
    if (bytes_per_second == 0) return nanoseconds(0);
    // In long double: bytes * 1e9 overflows 64 bits past 18 GB. Capped at about 30 years, far beyond any job.
    const long double due = static_cast<long double>(bytes_read) * 1e9L / static_cast<long double>(bytes_per_second);
    const long double wait = std::min(due - static_cast<long double>(elapsed.count()), 1e18L);
    return wait > 0 ? nanoseconds(static_cast<nanoseconds::rep>(wait)) : nanoseconds(0);
}

ReadPacer::ReadPacer(std::uint64_t bytes_per_second)
    : rate_(bytes_per_second), start_(std::chrono::steady_clock::now()) {}

void ReadPacer::after_read(std::uint64_t bytes) {
    if (rate_ == 0) return;
    // The total includes the other threads' reads: each thread waits until the whole rank is back at the rate.
    const auto total = bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    const auto elapsed = std::chrono::duration_cast<nanoseconds>(std::chrono::steady_clock::now() - start_);
    if (const auto wait = pacing_delay(total, elapsed, rate_); wait > nanoseconds(0)) sleep_unless_stopped(wait);
}

}  // namespace m2h::exchange
